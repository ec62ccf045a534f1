"""Compose for several GPU hosts: every compose file validates with ``docker-compose config``;
MinIO (pinned) with a one-shot bucket creation; the API reserves a GPU; the worker-only
``docker/gpu-host.compose.yml`` points at the central services and nothing else."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.test_compose import (COMPOSE_FILE, MINIO_PASSWORD, REPO, SECRETS, _command, _compose_config,
                          _env, _mounts, _option)

GPU_HOST_FILE = REPO / "docker" / "gpu-host.compose.yml"
CENTRAL = "10.0.0.5"
EVERY_FILE = [COMPOSE_FILE, *sorted((REPO / "docker").glob("*.compose.yml"))]


def _load(file, env) -> dict:
    proc = _compose_config(env, file)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def central() -> dict:
    return _load(COMPOSE_FILE, SECRETS)


@pytest.fixture(scope="module")
def gpu_host() -> dict:
    return _load(GPU_HOST_FILE, {**SECRETS, "MMLOP_CENTRAL_HOST": CENTRAL})


def test_there_is_a_gpu_host_file():
    assert GPU_HOST_FILE in EVERY_FILE


@pytest.mark.parametrize("file", EVERY_FILE, ids=lambda p: p.name)
def test_every_compose_file_validates(file):
    _load(file, {**SECRETS, "MMLOP_CENTRAL_HOST": CENTRAL})


def _devices(config: dict, service: str) -> list[dict]:
    return config["services"][service]["deploy"]["resources"]["reservations"]["devices"]


def test_minio_is_pinned_and_healthchecked(central):
    minio = central["services"]["minio"]
    assert minio["image"].startswith("minio/minio:RELEASE.")
    assert "latest" not in minio["image"]
    assert "miniodata" in _mounts(central, "minio")
    assert minio["healthcheck"]["test"]
    assert _env(central, "minio")["MINIO_ROOT_PASSWORD"] == MINIO_PASSWORD


def test_createbucket_makes_the_bucket_of_the_blob_url_once(central):
    job = central["services"]["createbucket"]
    assert job["image"].startswith("minio/mc:RELEASE.")
    assert str(job.get("restart", "no")) in {"no", "False", "false"}
    assert job["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(_command(central, "createbucket"))
    assert "mc mb --ignore-existing" in script
    bucket = _env(central, "api")["MMLOP_BLOB_URL"].removeprefix("s3://").split("/")[0]
    assert _env(central, "createbucket")["MMLOP_S3_BUCKET"] == bucket


@pytest.mark.parametrize("service", ["api", "worker"])
def test_app_services_wait_for_the_bucket(central, service):
    depends = central["services"][service]["depends_on"]
    assert depends["createbucket"]["condition"] == "service_completed_successfully"


def test_api_reserves_a_gpu_and_serves_on_it(central):
    (device,) = _devices(central, "api")
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert _env(central, "api")["MMLOP_DEVICE"] == "cuda"


def test_api_device_cpu_override(central):
    config = _load(COMPOSE_FILE, {**SECRETS, "MMLOP_API_DEVICE": "cpu"})
    assert _env(config, "api")["MMLOP_DEVICE"] == "cpu"
    assert _env(config, "worker")["MMLOP_DEVICE"] == "cuda"


def test_gpu_host_runs_only_gpu_workers(gpu_host):
    assert set(gpu_host["services"]) == {"worker"}
    (device,) = _devices(gpu_host, "worker")
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert _option(_command(gpu_host, "worker"), "--concurrency", "-c") == "1"
    assert set(_mounts(gpu_host, "worker")) <= {"weights"}
    assert gpu_host["services"]["worker"]["hostname"]


def test_gpu_host_points_at_the_central_services(gpu_host, central):
    env, there = _env(gpu_host, "worker"), _env(central, "worker")
    assert f"@{CENTRAL}:5432/" in env["MMLOP_DATABASE_URL"]
    assert env["MMLOP_BROKER_URL"] == f"redis://{CENTRAL}:6379/0"
    assert env["AWS_ENDPOINT_URL"] == f"http://{CENTRAL}:9000"
    for same in ("MMLOP_SECRET_KEY", "MMLOP_BLOB_URL", "MMLOP_TASK_QUEUE", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "MMLOP_BACKBONE", "MMLOP_PRETRAINED", "MMLOP_DEVICE"):
        assert env[same] == there[same], same
    assert _option(_command(gpu_host, "worker"), "-Q") == _option(_command(central, "worker"), "-Q")


def _published(config: dict, service: str) -> list[str]:
    """Published ports as ``address:published:target`` strings (short syntax, no /tcp)."""
    out = []
    for p in config["services"][service].get("ports", []):
        if isinstance(p, dict):
            p = f"{p.get('host_ip', '')}:{p.get('published')}:{p.get('target')}"
        out.append(str(p).removesuffix("/tcp"))
    return out


@pytest.mark.parametrize("bind", [None, "10.0.0.5"])
def test_central_publishes_what_gpu_hosts_reach_on_the_bind_address(bind):
    env = {**SECRETS, **({"MMLOP_BIND_ADDRESS": bind} if bind else {})}
    config = _load(COMPOSE_FILE, env)
    for service, port in (("postgres", 5432), ("redis", 6379), ("minio", 9000)):
        # Default: this host only; GPU hosts need the private address set explicitly.
        assert f"{bind or '127.0.0.1'}:{port}:{port}" in _published(config, service)


def test_gpu_host_environment_is_accepted_by_settings(gpu_host, monkeypatch):
    import os

    from service.settings import Settings

    for key in list(os.environ):
        if key.startswith("MMLOP_"):
            monkeypatch.delenv(key)
    for key, value in _env(gpu_host, "worker").items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.blob_url == "s3://mmlop/blobs" and not settings.is_sqlite


def test_gpu_host_needs_the_central_host():
    proc = _compose_config(SECRETS, GPU_HOST_FILE)
    assert proc.returncode != 0 and "MMLOP_CENTRAL_HOST" in proc.stderr
