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
