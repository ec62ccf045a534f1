"""Helpers shared by the service benchmarks: random adapters and a populated store + database.

Adapters here are untrained (random prompts of the `mmlop` preset, random unit class features):
timing and sizes do not depend on the values.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

import mmlop_core as m
from mmlop_core.adapter import Adapter
from mmlop_core.checkpoint import adapter_files
from mmlop_core.trainer import build_prompts

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "fashion_mnist" / "test"
SECRET = "benchmark-secret-key-0123456789abcdef"


def random_adapter(backbone: m.Backbone, seed: int, classes: int = 10) -> Adapter:
    """An untrained adapter of the `mmlop` preset with `classes` random unit class features (C, D)."""
    torch.manual_seed(seed)
    prompts = build_prompts(backbone, m.AdapterConfig()).cpu().requires_grad_(False)
    feats = torch.nn.functional.normalize(torch.randn(classes, backbone.embed_dim), dim=-1)
    return Adapter(config=m.AdapterConfig(), class_names=[f"class {seed}-{c}" for c in range(classes)],
                   prompts=prompts, class_features=feats, image_drift=None, backbone=backbone.describe())


def write_checkpoint(files: dict[str, bytes], directory: Path) -> None:
    """Write checkpoint files (from ``adapter_files``) into `directory` (no fsync: benchmark data)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)


def sample_images(n: int) -> list[bytes]:
    """PNG bytes of `n` committed Fashion-MNIST test photos."""
    files = sorted(p for d in sorted(FIXTURES.iterdir()) for p in sorted(d.iterdir()))
    return [files[i % len(files)].read_bytes() for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values` (inclusive method); 0.0 when empty."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[max(0, min(998, round(q * 1000) - 1))]


def populate_service(root: Path, backbone: m.Backbone, n_adapters: int, classes: int) -> dict:
    """A migrated SQLite database and blob store under `root` holding one tenant with
    `n_adapters` succeeded adaptations; returns {database_url, blob_root, key, ids}."""
    from sqlalchemy.orm import Session

    from service.db import make_engine
    from service.jobs import JobStatus, checkpoint_prefix
    from service.models import Adaptation, new_id, utcnow
    from service.tenants import create_tenant

    database_url = f"sqlite:///{root / 'mmlop.db'}"
    blob_root = root / "blobs"
    env = {**os.environ, "MMLOP_DATABASE_URL": database_url, "MMLOP_SECRET_KEY": SECRET,
           "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "upgrade", "head"],
                   cwd=root, env=env, check=True, capture_output=True, timeout=120)
    engine = make_engine(database_url)
    ids = []
    try:
        with Session(engine) as session:
            tenant, key = create_tenant(session, "benchmark", secret=SECRET)
            for i in range(n_adapters):
                adapter = random_adapter(backbone, i, classes)
                job = Adaptation(id=new_id(), tenant_id=tenant.id, status=JobStatus.succeeded.value,
                                 request_hash="0" * 64, class_names=adapter.class_names, images=[], num_images=0,
                                 adapter_config={}, train_config={}, backbone=backbone.name,
                                 pretrained=backbone.pretrained, attempt=1, cancel_requested=False,
                                 created_at=utcnow(), finished_at=utcnow())
                session.add(job)
                session.flush()
                write_checkpoint(adapter_files(adapter),
                                 blob_root / (checkpoint_prefix(tenant.id, job.id) + "/adapter"))
                ids.append(job.id)
            session.commit()
    finally:
        engine.dispose()
    return {"database_url": database_url, "blob_root": blob_root, "key": key, "ids": ids}
