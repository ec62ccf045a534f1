"""quota_max_stored_bytes counts bytes from the database (upload_bytes + checkpoint_bytes of the
tenant's live adaptations), never by walking the blob store (an S3 listing per request)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy.orm import Session

from service.db import make_engine
from service.jobs import JobStatus
from service.models import utcnow
from service.quotas import QuotaExceeded, check_new_adaptation, stored_bytes
from service.settings import Settings
from utils.factories import make_adaptation, make_tenant
from utils.stack import REPO, base_env


@pytest.fixture
def database_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    subprocess.run([sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "upgrade",
                    "head"], cwd=tmp_path, env=base_env({"MMLOP_DATABASE_URL": url}), check=True,
                   capture_output=True, timeout=120)
    return url


def test_stored_bytes_come_from_live_rows(database_url):
    tenant, _ = make_tenant(database_url)
    other, _ = make_tenant(database_url)
    make_adaptation(database_url, tenant, JobStatus.succeeded, upload_bytes=1000,
                    checkpoint_bytes=300)
    make_adaptation(database_url, tenant, JobStatus.queued, upload_bytes=50)
    make_adaptation(database_url, tenant, JobStatus.succeeded, upload_bytes=7000,
                    checkpoint_bytes=7000, deleted_at=utcnow())
    make_adaptation(database_url, other, JobStatus.queued, upload_bytes=99999)
    make_adaptation(database_url, tenant, JobStatus.queued)  # a row from before the column: 0
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            assert stored_bytes(session, tenant) == 1350
            settings = Settings(_env_file=None, quota_max_stored_bytes=1400)
            check_new_adaptation(session, tenant, 50, settings)
            with pytest.raises(QuotaExceeded) as info:
                check_new_adaptation(session, tenant, 51, settings)
            assert info.value.quota == "stored_bytes" and info.value.used == 1350
    finally:
        engine.dispose()
