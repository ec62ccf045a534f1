"""docker-compose.yml: the production stack is wired the way the service expects.

Parsed with ``docker-compose config`` (Debian's docker-compose parses and interpolates without a
Docker engine), so interpolation, anchors and merge keys are resolved exactly as at deploy time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SECRET = "test-secret-key-0123456789abcdef"
PG_PASSWORD = "0123456789abcdef"
MINIO_PASSWORD = "fedcba9876543210"
SECRETS = {"MMLOP_SECRET_KEY": SECRET, "POSTGRES_PASSWORD": PG_PASSWORD,
           "MINIO_ROOT_PASSWORD": MINIO_PASSWORD}
APP_SERVICES = ("migrate", "api", "worker")


def _compose_config(env: dict[str, str], file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed (make test installs it: apt-get install -y docker-compose)"
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MMLOP_", "POSTGRES_", "MINIO_", "AWS_"))}
    clean.update(env)
    return subprocess.run(
        [exe, "-f", str(file), "config"],
        cwd=REPO, env=clean, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def config() -> dict:
    proc = _compose_config(SECRETS)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def _env(config: dict, service: str) -> dict[str, str]:
    env = config["services"][service].get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _command(config: dict, service: str) -> list[str]:
    command = config["services"][service].get("command")
    assert isinstance(command, list), f"{service}: use the exec (list) form for command"
    return [str(part) for part in command]


def _mounts(config: dict, service: str) -> dict[str, str]:
    """Named-volume mounts of a service: volume name -> container path."""
    mounts = {}
    for item in config["services"][service].get("volumes", []):
        if isinstance(item, str):
            source, target = item.split(":")[:2]
        else:
            source, target = item.get("source"), item["target"]
        mounts[source] = target
    return mounts


def _option(command: list[str], *names: str) -> str:
    for i, part in enumerate(command):
        if part in names:
            return command[i + 1]
        for name in names:
            if name.startswith("--") and part.startswith(name + "="):
                return part.split("=", 1)[1]
    raise AssertionError(f"{' '.join(command)!r} lacks {names}")


def _is_under(path: str, root: str) -> bool:
    return PurePosixPath(root) == PurePosixPath(path) or PurePosixPath(root) in PurePosixPath(path).parents


def test_all_services_present(config):
    assert {"postgres", "redis", "minio", "createbucket", "migrate", "api", "worker"} <= set(
        config["services"])


def test_api_runs_uvicorn_on_8000_with_healthcheck(config):
    api = config["services"]["api"]
    command = _command(config, "api")
    assert command[:2] == ["uvicorn", "api.main:app"]
    assert _option(command, "--host") == "0.0.0.0"
    assert _option(command, "--port") == "8000"
    targets = {str(p["target"]) if isinstance(p, dict) else str(p).rsplit(":", 1)[-1] for p in api["ports"]}
    assert "8000" in targets
    test = " ".join(api["healthcheck"]["test"])
    assert "/healthz" in test and ":8000" in test


def test_worker_is_one_celery_process_per_gpu(config):
    command = _command(config, "worker")
    assert command[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert _option(command, "--concurrency", "-c") == "1"
    devices = config["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    device = devices[0]
    assert device["driver"] == "nvidia"
    assert device.get("count") == 1 or device.get("device_ids")
    assert "gpu" in device["capabilities"]
    assert _env(config, "worker")["MMLOP_DEVICE"].startswith("cuda")


def test_worker_consumes_the_queue_the_api_sends_to(config):
    from service.settings import Settings

    queue = _option(_command(config, "worker"), "-Q", "--queues")
    for service in ("api", "worker"):
        configured = _env(config, service).get("MMLOP_TASK_QUEUE", Settings.model_fields["task_queue"].default)
        assert configured == queue, f"{service} sends to {configured!r}, worker consumes {queue!r}"


def test_webhook_worker_consumes_the_webhook_queue_apart_from_training(config):
    """Deliveries never wait behind a training: their own queue, a light threads worker, no GPU."""
    command = _command(config, "webhooks")
    assert command[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert _option(command, "--pool", "-P") == "threads"
    queue = _option(command, "-Q", "--queues")
    assert queue != _option(_command(config, "worker"), "-Q", "--queues")
    for service in ("api", "worker", "webhooks"):
        assert _env(config, service)["MMLOP_WEBHOOK_QUEUE"] == queue, service
    assert "deploy" not in config["services"]["webhooks"]


def test_migrate_runs_alembic_once_after_postgres_is_healthy(config):
    migrate = config["services"]["migrate"]
    assert _command(config, "migrate") == ["alembic", "upgrade", "head"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(migrate.get("restart", "no")) in {"no", "False", "false"}


@pytest.mark.parametrize("service", ["api", "worker"])
def test_app_services_wait_for_migrations_and_redis(config, service):
    depends = config["services"][service]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == "service_healthy"


def test_postgres_and_redis_have_volumes_and_healthchecks(config):
    postgres, redis = config["services"]["postgres"], config["services"]["redis"]
    assert "/var/lib/postgresql/data" in _mounts(config, "postgres").values()
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "ping" in " ".join(redis["healthcheck"]["test"])
    assert _mounts(config, "redis"), "redis needs a volume for its append-only file"


def test_redis_persists_queued_jobs(config):
    command = _command(config, "redis")
    assert _option(command, "--appendonly") == "yes"
    data_dir = _option(command, "--dir") if "--dir" in command else "/data"
    assert data_dir in _mounts(config, "redis").values()


@pytest.mark.parametrize("service", ["api", "worker"])
def test_blobs_are_in_s3_not_in_a_shared_volume(config, service):
    env, mounts = _env(config, service), _mounts(config, service)
    assert "blobs" not in config["volumes"] and "blobs" not in mounts
    assert set(mounts) <= {"weights"}, f"{service} mounts {mounts}: only the weights cache"
    assert env["MMLOP_BLOB_URL"] == "s3://mmlop/blobs"
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_SECRET_ACCESS_KEY"] == MINIO_PASSWORD


@pytest.mark.parametrize("service", ["api", "worker"])
def test_weights_cache_volume_holds_every_cache_dir(config, service):
    env, mounts = _env(config, service), _mounts(config, service)
    assert "weights" in config["volumes"]
    target = mounts.get("weights")
    assert target, f"{service} does not mount the weights volume"
    for var in ("MMLOP_CACHE_DIR", "HF_HOME", "XDG_CACHE_HOME"):
        assert _is_under(env[var], target), f"{service}: {var}={env[var]} is outside {target}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_production_environment(config, service):
    env = _env(config, service)
    assert env["MMLOP_ENVIRONMENT"] == "production"
    assert env["MMLOP_SECRET_KEY"] == SECRET
    assert env["MMLOP_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["MMLOP_DATABASE_URL"]
    assert PG_PASSWORD in env["MMLOP_DATABASE_URL"]
    assert env["MMLOP_BROKER_URL"].startswith("redis://redis:6379")
    for var in ("MMLOP_BACKBONE", "MMLOP_PRETRAINED"):
        assert env[var]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_environment_is_accepted_by_settings(config, service, monkeypatch):
    from service.settings import Settings

    for key in list(os.environ):
        if key.startswith("MMLOP_"):
            monkeypatch.delenv(key)
    for key, value in _env(config, service).items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.environment.value == "production"
    assert not settings.is_sqlite
    assert settings.blob_url == "s3://mmlop/blobs"


@pytest.mark.parametrize("missing", ["MMLOP_SECRET_KEY", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"])
def test_secrets_are_required(missing):
    env = dict(SECRETS)
    del env[missing]
    proc = _compose_config(env)
    assert proc.returncode != 0
    assert missing in proc.stderr


def test_worker_has_a_stable_hostname(config):
    """Start-up recovery re-enqueues jobs left running by dead processes of the same hostname;
    a random container id as hostname would change on every re-creation."""
    assert config["services"]["worker"].get("hostname")
