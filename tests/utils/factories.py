"""Factories for service tests: tenants/keys and job rows written straight to a database,
Fashion-MNIST photo selections, multipart bodies and zip archives."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from service.db import make_engine
from service.jobs import JobStatus
from service.models import Adaptation, new_id, utcnow
from service.tenants import create_tenant

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fashion_mnist"
TEST_SECRET = "test-secret-key-0123456789abcdef"


def make_tenant(database_url: str, name: str | None = None, secret: str = TEST_SECRET) -> tuple[str, str]:
    """Create a tenant with one key in ``database_url``; returns (tenant id, plain key)."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            tenant, key = create_tenant(session, name or f"tenant-{new_id()[:8]}", secret=secret)
            session.commit()
            return tenant.id, key
    finally:
        engine.dispose()


def make_adaptation(database_url: str, tenant_id: str, status: JobStatus = JobStatus.queued,
                    **values: Any) -> str:
    """Insert a job row directly (not enqueued); returns its id."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            fields: dict[str, Any] = dict(
                id=new_id(), tenant_id=tenant_id, status=status.value, request_hash="0" * 64,
                class_names=["a", "b"], images=[], num_images=0, adapter_config={},
                train_config={}, backbone="mmlop-tiny", pretrained="none", attempt=0,
                cancel_requested=False, created_at=utcnow(),
            )
            job = Adaptation(**{**fields, **values})
            session.add(job)
            session.commit()
            return job.id
    finally:
        engine.dispose()


def read_adaptation(database_url: str, job_id: str) -> Adaptation | None:
    """The job row as stored (bypassing the API)."""
    engine = make_engine(database_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            return session.get(Adaptation, job_id)
    finally:
        engine.dispose()


def photos(split: str, per_class: int, classes: list[str] | None = None,
           skip: int = 0) -> list[tuple[str, Path]]:
    """(class name, path) of ``per_class`` Fashion-MNIST photos per class, in sorted order."""
    root = FIXTURES / split
    names = classes or sorted(p.name for p in root.iterdir())
    out = []
    for name in names:
        files = sorted((root / name).iterdir())[skip:skip + per_class]
        out.extend((name, f) for f in files)
    return out


def image_multipart(items: list[tuple[str, Path]]) -> tuple[list[tuple[str, Any]], dict[str, list[str]]]:
    """``files`` and ``data`` arguments of httpx for ``images`` + parallel ``labels``."""
    files = [("images", (p.name, p.read_bytes(), "image/png")) for _, p in items]
    return files, {"labels": [label for label, _ in items]}


def make_zip(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """A zip holding ``entries`` (name -> bytes) and optional symlinks (name -> target)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def class_zip(items: list[tuple[str, Path]], top: str | None = None) -> bytes:
    """A zip with one folder per class (optionally under ``top/``)."""
    prefix = f"{top}/" if top else ""
    return make_zip({f"{prefix}{label}/{p.name}": p.read_bytes() for label, p in items})


# Held-out accuracy bar of the end-to-end tests: the default preset and settings (no config) on the
# shipped tiny backbone (mmlop-tiny/fmnist), 16 photos per class, scored on 200 held-out photos.
# Its zero-shot top-1 on the 10,000 Fashion-MNIST test photos is 0.65 (chance 0.10).
E2E_MIN_ACCURACY = 0.55


def classify_accuracy(client: Any, adapter_id: str, items: list[tuple[str, Path]],
                      batch: int = 50) -> float:
    """Top-1 accuracy of ``POST /classify/{adapter_id}`` over ``items`` (multipart batches)."""
    correct = 0
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        files = [("images", (p.name, p.read_bytes(), "image/png")) for _, p in chunk]
        resp = client.post(f"/classify/{adapter_id}", files=files, data={"top_k": "1"})
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        assert len(results) == len(chunk)
        correct += sum(r["predictions"][0]["label"] == label for r, (label, _) in zip(results, chunk))
    return correct / len(items)
