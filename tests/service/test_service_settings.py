"""Settings: defaults, secret refusal outside development, visibility timeout vs job time."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import DEFAULT_SECRET_KEY, Settings


def _clean(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("MMLOP_"):
            monkeypatch.delenv(name)


def test_defaults_are_embedded(monkeypatch, tmp_path):
    _clean(monkeypatch)
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.database_url == "sqlite:///./var/mmlop.db"
    assert s.broker_is_filesystem and str(s.broker_folder) == "var/broker"
    assert s.backbone == "ViT-B-16" and s.pretrained == "openai" and s.device == "auto"
    assert s.visibility_timeout > s.job_max_seconds


def test_production_refuses_default_secret(monkeypatch, tmp_path):
    _clean(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMLOP_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings()
    monkeypatch.setenv("MMLOP_SECRET_KEY", "a-real-random-secret-of-enough-length")
    assert Settings().secret_key != DEFAULT_SECRET_KEY


def test_visibility_timeout_must_exceed_job_time(monkeypatch, tmp_path):
    _clean(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMLOP_JOB_MAX_SECONDS", "3600")
    monkeypatch.setenv("MMLOP_VISIBILITY_TIMEOUT", "3600")
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings()


@pytest.mark.parametrize("url", ["s3://", "s3:///x", "s3://bucket/../x", "s3://Bad_Bucket!/x",
                                 "ftp://a"])
def test_bad_blob_url_is_refused_when_settings_load(monkeypatch, tmp_path, url):
    _clean(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMLOP_BLOB_URL", url)
    with pytest.raises(ValidationError, match="MMLOP_BLOB_URL"):
        Settings()


@pytest.mark.parametrize("argv", [
    ["-m", "uvicorn", "api.main:app", "--port", "0"],
    ["-m", "celery", "-A", "worker.celery_app", "worker", "--pool", "solo"],
    ["-m", "service.console", "tenant", "list"],
], ids=["api", "worker", "cli"])
def test_entry_points_refuse_a_bad_blob_url_in_one_line(tmp_path, argv):
    """The API, the worker and the CLI exit at start with one line naming MMLOP_BLOB_URL
    (no traceback), instead of answering 500 per request."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(MMLOP_BLOB_URL="s3://bucket/../x", PYTHONPATH=str(repo))
    if argv[1] == "service.console":
        argv = ["-c", "from service.console import main; main()", *argv[2:]]
    out = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert "Traceback" not in out.stderr, out.stderr
    assert lines[-1] == ("mmlop: invalid configuration: MMLOP_BLOB_URL 's3://bucket/../x': "
                         "invalid key prefix '../x' (no '..', '.', '.tmp' or empty parts)")
