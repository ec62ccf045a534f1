"""Per-tenant rate limit: a fixed window of ``rate_limit_requests`` per ``rate_limit_window_s``.

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
    """Fixed-window counter per tenant, in Redis or in process memory."""

    def __init__(self, settings: Settings) -> None:
        self.limit = settings.rate_limit_requests
        self.window = settings.rate_limit_window_s
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

    def _count(self, tenant_id: str, window: int) -> int:
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            key = f"mmlop:rl:{tenant_id}:{window}"
            try:
                pipe = self._redis.pipeline()
                pipe.incr(key)
                pipe.expire(key, self.window + 1)
                return int(pipe.execute()[0])
            except Exception:  # noqa: BLE001 - fall back to the local counter
                logger.warning("rate limiter: Redis unreachable; counting in process for 10 s")
                self._redis_down_until = time.monotonic() + 10
        return self._count_local(tenant_id, window)

    def hit(self, tenant_id: str, now: float | None = None) -> RateState:
        """Count one request of ``tenant_id``; returns the state (``allowed`` False over limit)."""
        now = time.time() if now is None else now
        window = int(now // self.window)
        reset = int((window + 1) * self.window - now) or 1
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


def enforce(tenant_id: str, settings: Settings) -> RateState:
    """Count a request; raise 429 problem+json with ``Retry-After`` over the limit."""
    state = limiter_for(settings).hit(tenant_id)
    if not state.allowed:
        raise ProblemError(429, f"rate limit of {state.limit} requests per "
                           f"{settings.rate_limit_window_s} s exceeded; retry in "
                           f"{state.reset_s} s", kind="rate-limited", headers=state.headers())
    return state
