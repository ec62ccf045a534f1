"""The client against the real embedded service (uvicorn + a Celery worker, SQLite, filesystem
broker; the shipped tiny backbone on Fashion-MNIST photos): adapt a folder -> wait -> classify ->
list/get -> download -> delete, the async client, problem+json errors, idempotency, Retry-After
on a real 429.
(The models against the served OpenAPI schema: test_client_openapi.py.)"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from mmlop_client import (Adaptation, AdaptationList, AsyncClient, ClassifyResult, Client,
                          ImageResult, MMLoPAPIError, MMLoPConnectionError, MMLoPTimeoutError,
                          Prediction, Progress)
from utils.factories import FIXTURES, make_tenant
from utils.stack import Stack, base_env

pytestmark = pytest.mark.slow

CLASSES = ("bag", "sneaker", "trouser")
# Small jobs: 4 shots of 3 classes, 2 epochs; the 2 other photos of each class are held out.
FAST = {"epochs": 2, "shots": 4, "seed": 1}


def photo_folder(root: Path, per_class: int = 6) -> Path:
    """``root/<class>/<photo>`` with ``per_class`` training photos of each of CLASSES."""
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for src in sorted((FIXTURES / "train" / name).iterdir())[:per_class]:
            shutil.copy(src, root / name / src.name)
    return root


def test_adapt_folder_wait_classify_list_get_download_delete(embedded_stack, tmp_path):
    _, key = make_tenant(embedded_stack.database_url)
    folder = photo_folder(tmp_path / "photos")
    seen: list[Adaptation] = []
    with Client(embedded_stack.base_url, key) as c:
        job = c.create_adaptation(folder, config=FAST)
        assert isinstance(job, Adaptation) and job.status in ("queued", "running")
        assert (job.num_images, job.class_names) == (18, list(CLASSES))
        assert c.create_adaptation(folder, config=FAST).id == job.id  # same call: same job
        with pytest.raises(MMLoPTimeoutError, match="still queued|still running"):
            c.wait(job.id, progress=False, timeout=0)
        done = c.wait(job.id, progress=seen.append, timeout=120, poll_interval=0.2)
        assert done.status == "succeeded" and done.done and seen[-1] == done
        assert isinstance(done.progress, Progress) and done.progress.steps >= 1
        assert done.finished_at is not None and done.finished_at.tzinfo is not None

        tests = [sorted((FIXTURES / "test" / n).iterdir())[0] for n in CLASSES]
        result = c.classify(job.id, tests, top_k=2)
        assert isinstance(result, ClassifyResult) and result.adapter_id == job.id
        assert [r.filename for r in result.results] == [p.name for p in tests]
        assert all(isinstance(r, ImageResult) and len(r.predictions) == 2 and
                   isinstance(r.top, Prediction) and r.top.label in CLASSES for r in result.results)
        open_vocab = c.classify(job.id, tests[0].read_bytes(), top_k=1, class_names=["bag", "dress"])
        assert open_vocab.class_names == ["bag", "dress"] and len(open_vocab.results) == 1

        page = c.list(limit=5)
        assert isinstance(page, AdaptationList) and job.id in [a.id for a in page.items]
        assert [a.id for a in c.list(status="succeeded").items] == [job.id]
        assert c.get(job.id).status == "succeeded"

        path = c.download_checkpoint(job.id, tmp_path)
        assert path == tmp_path / f"adapter-{job.id}.zip"
        with zipfile.ZipFile(path) as zf:
            assert {"adapter_config.json", "adapter_model.safetensors"} <= {
                Path(n).name for n in zf.namelist()}

        c.delete(job.id)
        with pytest.raises(MMLoPAPIError) as info:
            c.get(job.id)
        assert (info.value.status, info.value.kind) == (404, "not-found")


def test_async_client_pairs_and_zip(embedded_stack, tmp_path):
    _, key = make_tenant(embedded_stack.database_url)
    folder = photo_folder(tmp_path / "photos", per_class=5)
    pairs = [(p, p.parent.name) for p in sorted(folder.glob("*/*.png"))]
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p, label in pairs:
            zf.write(p, f"{label}/{p.name}")

    async def flow() -> None:
        async with AsyncClient(embedded_stack.base_url, key) as c:
            from_pairs = await c.create_adaptation(pairs, config={"epochs": 1, "shots": 4})
            from_zip = await c.create_adaptation(archive, config={"epochs": 1, "shots": 4})
            again = await c.create_adaptation(archive, config={"epochs": 1, "shots": 4})
            assert again.id == from_zip.id != from_pairs.id
            done = await c.wait(from_pairs.id, progress=False, timeout=120, poll_interval=0.2)
            assert done.status == "succeeded" and done.num_images == 15
            result = await c.classify(done.id, [pairs[0][0]], top_k=1)
            assert result.results[0].top.label in CLASSES
            assert {a.id for a in (await c.list()).items} == {from_pairs.id, from_zip.id}
            await c.delete(from_zip.id)
            await c.delete(from_pairs.id)
            assert (await c.list()).total == 0

    asyncio.run(flow())


def test_problem_answers_become_api_errors(embedded_stack, tmp_path):
    _, key = make_tenant(embedded_stack.database_url)
    bad = tmp_path / "a.png"
    bad.write_bytes(b"this is not a png")
    good = sorted((FIXTURES / "train" / "bag").iterdir())[0]
    with Client(embedded_stack.base_url, key) as c:
        with pytest.raises(MMLoPAPIError) as info:
            c.create_adaptation([(bad, "bag"), (good, "coat")])
        err = info.value
        assert (err.status, err.kind, err.field) == (422, "invalid-image", "images[0] (a.png)")
        assert err.detail and err.body["status"] == 422
        with pytest.raises(MMLoPAPIError) as info:
            c.create_adaptation([(good, "bag"), (good, "coat")], config={"train": {"epochs": -3}})
        assert (info.value.status, info.value.kind, info.value.field) == (
            422, "invalid-config", "config.train.epochs")
        with pytest.raises(MMLoPAPIError) as info:
            c.classify("00000000-0000-0000-0000-000000000000", [good])
        assert (info.value.status, info.value.kind) == (404, "not-found")
    with Client(embedded_stack.base_url, "not-a-key") as c, pytest.raises(MMLoPAPIError) as info:
        c.list()
    assert info.value.status == 401
    with Client("http://127.0.0.1:9", key, max_retries=1, backoff=0.01) as c, \
            pytest.raises(MMLoPConnectionError, match="cannot reach"):
        c.list()


@pytest.fixture
def rate_limited_api(embedded_stack):
    """A second API process on the same database with a limit of 2 requests per 2 s window."""
    env = base_env({"MMLOP_RATE_LIMIT_REQUESTS": "2", "MMLOP_RATE_LIMIT_WINDOW_S": "2"})
    stack = Stack(env=env, cwd=embedded_stack.cwd, database_url=embedded_stack.database_url,
                  blob_root=embedded_stack.blob_root)
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def test_retries_honour_retry_after_of_a_real_429(rate_limited_api, caplog):
    _, key = make_tenant(rate_limited_api.database_url)
    with Client(rate_limited_api.base_url, key, max_retries=0) as c:
        with pytest.raises(MMLoPAPIError) as info:
            for _ in range(20):  # 2 per fixed 2 s window: one of these is refused
                c.list()
    assert (info.value.status, info.value.kind) == (429, "rate-limited")
    assert info.value.retry_after is not None and info.value.retry_after >= 1
    caplog.set_level(logging.INFO, logger="mmlop_client.client")
    waits = []
    with Client(rate_limited_api.base_url, key, max_retries=4) as c:
        for _ in range(6):  # over the limit: every refusal is retried after its Retry-After
            start = time.monotonic()
            n_before = len(caplog.records)
            assert c.list().total == 0
            slept = [r for r in caplog.records[n_before:] if r.getMessage().startswith("retrying")]
            waits += [(r.args[0], time.monotonic() - start) for r in slept]
    assert waits, "no 429 was retried"
    for asked, elapsed in waits:
        assert asked >= 1 and asked == int(asked)  # the server's Retry-After, not a backoff
        assert elapsed >= asked - 0.05
