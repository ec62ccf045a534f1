"""One settings object shared by the API, the worker and the CLI (env prefix ``MMLOP_``)."""

from __future__ import annotations

import functools
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "dev-insecure-secret-key-change-me"


class Environment(StrEnum):
    """Deployment environment; defaults are only accepted in development."""

    development = "development"
    production = "production"


class Settings(BaseSettings):
    """Service configuration, read from ``MMLOP_*`` environment variables (and ``.env``)."""

    model_config = SettingsConfigDict(env_prefix="MMLOP_", env_file=".env", extra="ignore")

    # development | production; production refuses the default secret key.
    environment: Environment = Environment.development
    # Key of the HMAC-SHA256 used to hash API keys. Changing it invalidates every key.
    secret_key: str = DEFAULT_SECRET_KEY
    # SQLAlchemy URL: sqlite:///... (embedded default) or postgresql+psycopg://...
    database_url: str = "sqlite:///./var/mmlop.db"
    # Celery broker: filesystem://<folder> (embedded, server-less) or redis://host:port/db.
    broker_url: str = "filesystem://./var/broker"
    # Celery queue the training tasks go to.
    task_queue: str = "mmlop"
    # Root folder of the blob store (uploads and checkpoints).
    blob_root: Path = Path("./var/blobs")
    # Blob store URL: file:///data/blobs or s3://bucket/prefix (endpoint, region and credentials
    # from the standard AWS_* variables, e.g. AWS_ENDPOINT_URL). None: file:// + blob_root.
    blob_url: str | None = None
    # S3 only: local folder where the API keeps checkpoints it read, one entry per adapter id
    # and attempt (so a deleted or retrained adapter is never served stale) ...
    blob_cache_dir: Path = Path("./var/blob-cache")
    # ... and the most entries it holds (least recently used ones are removed first).
    blob_cache_entries: int = Field(default=256, ge=1)
    # Worker: how long (seconds) a training attempt retries an unreachable blob store (reading
    # the uploads, publishing the checkpoint) with backoff before it fails the job saying so.
    blob_retry_s: float = Field(default=60.0, ge=0)
    # Reconciler: seconds a temp file (filesystem) or an incomplete multipart upload (S3) must
    # have been seen by the same worker before it is removed or aborted (its own clock; long
    # uploads are allowed). An S3 lifecycle rule AbortIncompleteMultipartUpload is the long-stop.
    blob_temp_max_age_s: float = Field(default=86400.0, ge=0)
    # open_clip model name of the frozen backbone.
    backbone: str = "ViT-B-16"
    # open_clip pretrained tag, a local checkpoint path, or "none" (seeded random init).
    pretrained: str = "openai"
    # torch device: auto | cpu | cuda | cuda:N.
    device: str = "auto"
    # Directory for downloaded backbone weights (None: open_clip's default).
    cache_dir: Path | None = None

    # Uploads: total bytes of one request body, one file, number of images, pixels per image.
    upload_max_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    upload_max_file_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    upload_max_files: int = Field(default=10_000, gt=0)
    upload_max_pixels: int = Field(default=40_000_000, gt=0)
    # JSON bodies (training uploads and classify) are parsed in memory at ~2.5x their size:
    # their own, smaller limit (413 pointing to multipart past it; api/json_body.py).
    upload_json_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Classification: images per request.
    classify_max_images: int = Field(default=64, gt=0)
    # Open-vocabulary classify: most class_names in one request (413 past it), and texts the
    # text encoder runs per model-thread step while computing their class features (other
    # tenants' image batches run between steps; issue 12 A.1).
    classify_max_class_names: int = Field(default=1000, gt=1, le=100_000)
    open_vocabulary_texts_per_step: int = Field(default=256, gt=0, le=100_000)
    # Adapters kept loaded in each API process.
    adapter_cache_size: int = Field(default=256, gt=0)
    # Inference engine (api/engine.py): device bytes of the adapter cache (prompts + class
    # features, open-vocabulary class features included); least recently used are evicted.
    adapter_cache_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # Most images in one batched vision forward, and longest wait (milliseconds) for a batch to fill.
    max_batch_images: int = Field(default=32, gt=0)
    max_wait_ms: float = Field(default=5.0, ge=0)
    # Images waiting for the engine; when full, classify answers 503 with Retry-After.
    engine_queue_size: int = Field(default=512, gt=0)
    # Cross-request (cross-tenant) batching; off runs each request's images as its own batch.
    batching: bool = True
    # Precision of the engine's vision forward: fp32, or bf16 autocast (CUDA only; CPU stays fp32).
    inference_precision: Literal["fp32", "bf16"] = "fp32"

    # Jobs: most epochs a client may ask for, longest training (seconds).
    job_max_epochs: int = Field(default=200, gt=0)
    job_max_seconds: int = Field(default=3600, gt=0)
    # Deliveries of one job before it is marked failed (poison-message guard).
    job_max_attempts: int = Field(default=3, gt=0)
    # Broker visibility timeout (seconds): an unacked message is redelivered after this long.
    # Must exceed the longest job, or a running job would be delivered twice.
    visibility_timeout: int = Field(default=7200, gt=0)
    # Minimum seconds between two progress writes to the database.
    progress_interval_s: float = Field(default=0.3, gt=0)
    # GET /adaptations/{id}/events (Server-Sent Events, docs/SERVICE.md "Live progress"): seconds
    # between two reads of the job's row, between keep-alive comments while nothing changes,
    # and before a stream ends so that the client reconnects (bounds every stream); the
    # reconnection delay (milliseconds) sent as each event's `retry:`.
    events_poll_interval_s: float = Field(default=0.5, gt=0, le=60)
    events_keepalive_s: float = Field(default=15.0, gt=0, le=300)
    events_max_stream_s: float = Field(default=300.0, gt=0, le=86400)
    events_retry_ms: int = Field(default=2000, ge=0, le=600_000)
    # torch threads per process (0: torch's default).
    torch_threads: int = Field(default=0, ge=0)

    # Hostile inputs (issue 5): longest class name (characters and BPE tokens; the prompt
    # template and learned context must still fit the text encoder's 77-token context).
    class_name_max_chars: int = Field(default=200, gt=0)
    class_name_max_tokens: int = Field(default=40, gt=0)
    # Per-tenant rate limit: requests per window (0 disables), window length (seconds).
    rate_limit_requests: int = Field(default=6000, ge=0)
    rate_limit_window_s: int = Field(default=60, gt=0)
    # Failed authentication per client address (checked before the key's database lookup):
    # bad API keys allowed per window (0 disables), window length (seconds). Over it, every
    # request from that address is 429 until the window ends.
    auth_failure_limit: int = Field(default=30, ge=0)
    auth_failure_window_s: int = Field(default=60, gt=0)
    # Bearer token that GET /metrics requires when set (unset or empty: /metrics is open).
    metrics_token: SecretStr | None = None
    # Per-tenant quotas (0 disables each): live adaptations, queued+running jobs, stored bytes.
    quota_max_adapters: int = Field(default=1000, ge=0)
    quota_max_concurrent_jobs: int = Field(default=20, ge=0)
    quota_max_stored_bytes: int = Field(default=20 * 1024**3, ge=0)
    # Reconciler (worker/reconciler.py, runs in every worker's main process): seconds between
    # passes (0 disables); age before a queued job missing from the broker is re-sent and an
    # orphaned blob folder or temp file is removed; heartbeat age after which a running job's
    # worker counts as dead.
    reconcile_interval_s: float = Field(default=30.0, ge=0)
    reconcile_grace_s: float = Field(default=60.0, ge=0)
    job_heartbeat_timeout_s: float = Field(default=900.0, gt=0)
    # Webhooks (docs/SERVICE.md "Webhooks"): the Celery queue of delivery attempts (consumed by
    # the light webhook worker, never by a training worker), attempts per event before giving
    # up, first retry delay and its cap (seconds; doubled per attempt, with jitter), one
    # attempt's time limit (seconds), how long the previous signing secret still signs after a
    # rotation (seconds), the longest callback_url, and the operator allowlist: hostnames, IPs
    # or CIDRs (comma or space separated) that callback URLs may reach although they are
    # loopback, private, link-local or otherwise non-public.
    webhook_queue: str = "mmlop-webhooks"
    webhook_max_attempts: int = Field(default=8, gt=0, le=100)
    webhook_backoff_s: float = Field(default=10.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    webhook_secret_overlap_s: float = Field(default=86400.0, ge=0)
    callback_url_max_length: int = Field(default=2048, gt=10, le=8192)
    webhook_allowlist: str = ""
    # Log lines of the API and the worker (service/logs.py): text, or one JSON object per line.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.environment != Environment.development and self.secret_key == DEFAULT_SECRET_KEY:
            raise ValueError(
                "MMLOP_SECRET_KEY is the development default; set a random secret in "
                f"environment {self.environment.value!r}"
            )
        if self.blob_url is not None:
            from service.blobs import parse_blob_url

            parse_blob_url(self.blob_url)  # BlobKeyError (a ValueError) naming MMLOP_BLOB_URL
        if len(self.secret_key) < 16:
            raise ValueError("MMLOP_SECRET_KEY must be at least 16 characters")
        if self.visibility_timeout <= self.job_max_seconds + 60:
            raise ValueError(
                f"MMLOP_VISIBILITY_TIMEOUT ({self.visibility_timeout}s) must exceed "
                f"MMLOP_JOB_MAX_SECONDS ({self.job_max_seconds}s) by more than 60 s"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        """True when the database is an SQLite file (embedded mode)."""
        return self.database_url.startswith("sqlite")

    @property
    def broker_is_filesystem(self) -> bool:
        """True when the broker is kombu's server-less filesystem transport."""
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        """Folder of the filesystem broker (``filesystem://<folder>``)."""
        rest = self.broker_url[len("filesystem://"):]
        return Path(rest or "./var/broker")


def _one_line(exc: ValidationError) -> str:
    """``MMLOP_<NAME>: <message>`` of each error, joined on one line."""
    parts = []
    for err in exc.errors():
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        loc = [str(x) for x in err.get("loc", ()) if x != "__root__"]
        parts.append(f"MMLOP_{loc[0].upper()}: {msg}" if loc else msg)
    return "; ".join(parts)


@functools.lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once; tests start fresh processes).

    Raises ``SystemExit`` with a one-line ``invalid configuration: ...`` message (naming the
    variables, no traceback) when a setting is invalid, so the API, the worker and the CLI
    refuse to start rather than fail per request.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise SystemExit(f"mmlop: invalid configuration: {_one_line(exc)}") from None
