"""Per-tenant rate limit: a fixed window of ``rate_limit_requests`` per ``rate_limit_window_s``;
and per client address, a fixed window of ``auth_failure_limit`` bad API keys per
``auth_failure_window_s``, checked before the key's database lookup (``check_auth_failures``).

Counters live in Redis when the broker is Redis (shared by every API process: ``INCR`` +
``EXPIRE`` on ``mmlop:rl:<tenant>:<window>``), else in process memory (embedded mode, one API
process). If Redis cannot be reached the process-local counter is used (fail open to a local
limit, never to a 500). Answers carry ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` (IETF draft ``ratelimit-headers``); a refusal is 429 problem+json with
``Retry-After`` (seconds).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from api.problem import ProblemError
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateState:
    """Outcome of one counted request: the limit, requests left, seconds to the window's end."""

    limit: int
    remaining: int
    reset_s: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers (plus ``Retry-After`` when refused)."""
        out = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
               "RateLimit-Reset": str(self.reset_s)}
        if not self.allowed:
            out["Retry-After"] = str(max(1, self.reset_s))
        return out


class RateLimiter:
    """Fixed-window counter per subject (a tenant id, a client address), in Redis or in memory.

    ``limit`` and ``window`` default to the per-tenant request limit; Redis keys are
    ``<prefix>:<subject>:<window>``.
    """

    def __init__(self, settings: Settings, limit: int | None = None, window: int | None = None,
                 prefix: str = "mmlop:rl") -> None:
        self.limit = settings.rate_limit_requests if limit is None else limit
        self.window = settings.rate_limit_window_s if window is None else window
        self.prefix = prefix
        self._redis: Any = None
        self._redis_down_until = 0.0
        if settings.broker_url.startswith(("redis://", "rediss://")):
            import redis

            self._redis = redis.Redis.from_url(settings.broker_url, socket_timeout=0.5,
                                               socket_connect_timeout=0.5)
        self._local: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def _count_local(self, tenant_id: str, window: int) -> int:
        with self._lock:
            for key in [k for k in self._local if k[1] < window]:
                del self._local[key]
            self._local[(tenant_id, window)] = self._local.get((tenant_id, window), 0) + 1
            return self._local[(tenant_id, window)]

    def _count(self, tenant_id: str, window: int, add: int = 1) -> int:
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            key = f"{self.prefix}:{tenant_id}:{window}"
            try:
                if not add:
                    return int(self._redis.get(key) or 0)
                pipe = self._redis.pipeline()
                pipe.incr(key)
                pipe.expire(key, self.window + 1)
                return int(pipe.execute()[0])
            except Exception:  # noqa: BLE001 - fall back to the local counter
                logger.warning("rate limiter: Redis unreachable; counting in process for 10 s")
                self._redis_down_until = time.monotonic() + 10
        if not add:
            with self._lock:
                return self._local.get((tenant_id, window), 0)
        return self._count_local(tenant_id, window)

    def _window(self, now: float | None) -> tuple[int, int]:
        """(index of the fixed window holding ``now``, whole seconds until it ends, at least 1)."""
        now = time.time() if now is None else now
        window = int(now // self.window)
        return window, int((window + 1) * self.window - now) or 1

    def used(self, subject: str, now: float | None = None) -> RateState:
        """The state of ``subject``'s current window without counting (``allowed``: below limit)."""
        window, reset = self._window(now)
        if self.limit <= 0:
            return RateState(0, 0, reset, True)
        used = self._count(subject, window, add=0)
        return RateState(self.limit, max(0, self.limit - used), reset, used < self.limit)

    def hit(self, tenant_id: str, now: float | None = None) -> RateState:
        """Count one request of ``tenant_id``; returns the state (``allowed`` False over limit)."""
        window, reset = self._window(now)
        if self.limit <= 0:
            return RateState(0, 0, reset, True)
        used = self._count(tenant_id, window)
        return RateState(self.limit, max(0, self.limit - used), reset, used <= self.limit)


_limiters: dict[int, RateLimiter] = {}


def limiter_for(settings: Settings) -> RateLimiter:
    """The process's limiter for ``settings`` (one per settings object)."""
    limiter = _limiters.get(id(settings))
    if limiter is None:
        limiter = _limiters[id(settings)] = RateLimiter(settings)
    return limiter


_auth_limiters: dict[int, RateLimiter] = {}


def _auth_limiter(settings: Settings) -> RateLimiter:
    limiter = _auth_limiters.get(id(settings))
    if limiter is None:
        # Namespaced by the task queue: one deployment's addresses, not another's on the same Redis.
        limiter = _auth_limiters[id(settings)] = RateLimiter(
            settings, settings.auth_failure_limit, settings.auth_failure_window_s,
            prefix=f"mmlop:authfail:{settings.task_queue}")
    return limiter


def check_auth_failures(address: str, settings: Settings) -> None:
    """Refuse a client address that has used up its failed authentications in this window.

    Called before the API key is looked up, so a refused guess costs no database query.

    Raises:
        ProblemError: 429 ``auth-rate-limited`` with ``Retry-After`` (seconds to the window's end).
    """
    state = _auth_limiter(settings).used(address)
    if not state.allowed:
        raise ProblemError(429, f"too many failed authentications from this address (limit "
                           f"{state.limit} per {settings.auth_failure_window_s} s); retry in "
                           f"{state.reset_s} s", kind="auth-rate-limited",
                           headers={"Retry-After": str(max(1, state.reset_s))})


def record_auth_failure(address: str, settings: Settings) -> None:
    """Count one bad API key from ``address`` (see :func:`check_auth_failures`)."""
    state = _auth_limiter(settings).hit(address)
    if state.limit and state.remaining == 0:
        logger.warning("failed authentications from %s reached the limit of %d per %d s",
                       address, state.limit, settings.auth_failure_window_s)


def enforce(tenant_id: str, settings: Settings) -> RateState:
    """Count a request; raise 429 problem+json with ``Retry-After`` over the limit."""
    state = limiter_for(settings).hit(tenant_id)
    if not state.allowed:
        raise ProblemError(429, f"rate limit of {state.limit} requests per "
                           f"{settings.rate_limit_window_s} s exceeded; retry in "
                           f"{state.reset_s} s", kind="rate-limited", headers=state.headers())
    return state
