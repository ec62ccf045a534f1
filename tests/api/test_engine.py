"""The inference engine in-process (tiny backbone, no stack): cross-adapter batching equals
per-adapter ``Predictor.classify``, backpressure, the byte-budgeted adapter cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

import mmlop_core as m
from api.engine import AdapterCache, InferenceEngine, ResidentAdapter
from api.problem import ProblemError
from mmlop_core.adapter import Adapter
from mmlop_core.trainer import build_prompts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fashion_mnist" / "test"


@pytest.fixture(scope="module")
def backbone() -> m.Backbone:
    torch.manual_seed(0)
    return m.load_backbone(m.TINY_MODEL, "none", device="cpu")


def make_adapter(backbone: m.Backbone, seed: int, classes: int = 4, **config) -> Adapter:
    """A random (untrained) adapter: prompts of the `mmlop` preset, random unit class features."""
    torch.manual_seed(seed)
    cfg = m.AdapterConfig(**config)
    prompts = build_prompts(backbone, cfg).cpu().requires_grad_(False)
    with torch.no_grad():
        for p in prompts.parameters():
            p.mul_(20.0)  # large prompts so that adapters really differ
    feats = torch.nn.functional.normalize(torch.randn(classes, backbone.embed_dim), dim=-1)
    return Adapter(config=cfg, class_names=[f"c{seed}-{c}" for c in range(classes)], prompts=prompts,
                   class_features=feats, image_drift=None, backbone=backbone.describe())


@pytest.fixture(scope="module")
def stored(backbone: m.Backbone, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four adapters saved in a temp store: id -> checkpoint directory."""
    root = tmp_path_factory.mktemp("store")
    out = {}
    for i in range(4):
        d = root / f"a{i}"
        m.save_adapter(make_adapter(backbone, i), d)
        out[f"a{i}"] = d
    return out


def images(n: int) -> list:
    files = sorted(p for d in sorted(FIXTURES.iterdir()) for p in sorted(d.iterdir()))[:n]
    return [m.open_image(p.read_bytes()) for p in files]


def pixels(backbone: m.Backbone, pil: list) -> torch.Tensor:
    return torch.stack([backbone.preprocess(im) for im in pil])


def test_mixed_batch_equals_predictor_per_adapter(backbone, stored):
    pil = images(8)
    # the batch fills exactly (4 x 2 + 3 images); the long wait covers the adapters' cold loads
    engine = InferenceEngine(backbone, max_batch_images=11, max_wait_ms=10_000)
    predictor = m.Predictor(backbone)

    async def go():
        px = pixels(backbone, pil)
        calls = [engine.classify(aid, d, px[2 * i:2 * i + 2], 3) for i, (aid, d) in enumerate(stored.items())]
        calls.append(engine.classify("a1", stored["a1"], px[:3], 2, ["cat", "dog", "shoe"]))
        out = await asyncio.gather(*calls)
        await engine.stop()
        return out

    out = asyncio.run(go())
    assert engine.stats.batches == 1, "all requests should share one forward"
    assert engine.stats.adapters_per_batch == 4
    for i, (aid, d) in enumerate(stored.items()):
        want = predictor.classify(m.load_adapter(d, backbone), pil[2 * i:2 * i + 2], top_k=3)
        got = out[i]
        assert [[p.label for p in r] for r in got] == [[p.label for p in r] for r in want]
        for gr, wr in zip(got, want):
            assert [p.score for p in gr] == pytest.approx([p.score for p in wr], abs=1e-4)
    want = predictor.classify(m.load_adapter(stored["a1"], backbone), pil[:3], top_k=2,
                              class_names=["cat", "dog", "shoe"])
    assert [[p.label for p in r] for r in out[4]] == [[p.label for p in r] for r in want]
    for gr, wr in zip(out[4], want):
        assert [p.score for p in gr] == pytest.approx([p.score for p in wr], abs=1e-4)
    # prompts differ per adapter: the same image gets different scores under a0 and a1
    assert engine.cache.stats.vocab_misses == 1


def test_batching_off_runs_each_request_alone(backbone, stored):
    engine = InferenceEngine(backbone, max_wait_ms=50, batching=False)
    px = pixels(backbone, images(2))

    async def go():
        await asyncio.gather(*(engine.classify(aid, d, px, 1) for aid, d in stored.items()))
        await engine.stop()

    asyncio.run(go())
    assert engine.stats.batches == 4 and engine.stats.images == 8


def test_backpressure_503_with_retry_after(backbone, stored):
    engine = InferenceEngine(backbone, max_wait_ms=200, queue_size=4)
    px = pixels(backbone, images(3))

    async def go():
        first = asyncio.ensure_future(engine.classify("a0", stored["a0"], px, 1))
        await asyncio.sleep(0.1)  # loaded and queued (3 of 4), the batcher is still waiting
        with pytest.raises(ProblemError) as err:
            await engine.classify("a0", stored["a0"], px[:2], 1)
        assert (await first)[0]
        await engine.stop()
        return err.value

    err = asyncio.run(go())
    assert err.status == 503 and err.headers["Retry-After"]
    assert engine.stats.rejected == 1


def test_cache_evicts_by_bytes_counts_and_invalidates(backbone, stored):
    engine = InferenceEngine(backbone, max_wait_ms=1)
    px = pixels(backbone, images(1))

    async def go(ids):
        for aid in ids:
            await engine.classify(aid, stored[aid], px, 1)

    asyncio.run(go(["a0"]))
    per_adapter = engine.cache.bytes
    assert 0 < per_adapter < 100_000
    engine.cache.max_bytes = int(per_adapter * 2.5)  # room for two
    asyncio.run(go(["a1", "a2", "a1", "a0"]))
    s = engine.cache.stats
    assert (s.hits, s.misses, s.evictions) == (1, 4, 2)
    assert "a0" in engine.cache and "a1" in engine.cache and "a2" not in engine.cache
    assert engine.cache.bytes <= engine.cache.max_bytes
    engine.cache.invalidate("a1")
    assert "a1" not in engine.cache and engine.cache.adapters == 1
    asyncio.run(go(["a1"]))
    assert s.misses == 5


def test_concurrent_misses_share_one_load(tmp_path):
    calls = []

    def load(adapter_id, d):
        import time
        time.sleep(0.1)
        calls.append(d)
        return ResidentAdapter(adapter_id, make_adapter(m.load_backbone(m.TINY_MODEL, "none"), 0), None, 1)

    cache = AdapterCache(load, 1 << 30)

    async def go():
        return await asyncio.gather(*(cache.get("x", tmp_path) for _ in range(5)))

    got = asyncio.run(go())
    assert len(calls) == 1 and all(g is got[0] for g in got)
    cache.close()


def test_bad_checkpoint_fails_only_its_request(backbone, stored, tmp_path):
    engine = InferenceEngine(backbone, max_wait_ms=20)
    px = pixels(backbone, images(1))

    async def go():
        return await asyncio.gather(engine.classify("bad", tmp_path, px, 1),
                                    engine.classify("a0", stored["a0"], px, 1), return_exceptions=True)

    bad, good = asyncio.run(go())
    assert isinstance(bad, m.CheckpointError) and good[0][0].label.startswith("c0-")


def test_metrics_expose_cache_and_engine_counters(backbone, stored):
    from prometheus_client import CollectorRegistry, generate_latest

    from api.metrics import engine_metrics

    engine = InferenceEngine(backbone, max_wait_ms=1)
    px = pixels(backbone, images(1))

    async def go():
        await engine.classify("a0", stored["a0"], px, 1)
        await engine.classify("a0", stored["a0"], px, 1)
        await engine.stop()

    asyncio.run(go())

    class Collector:
        def collect(self):
            yield from engine_metrics(engine)

    registry = CollectorRegistry()
    registry.register(Collector())
    text = generate_latest(registry).decode()
    assert "mmlop_adapter_cache_hits_total 1.0" in text
    assert "mmlop_adapter_cache_misses_total 1.0" in text
    assert "mmlop_adapter_cache_evictions_total 0.0" in text
    assert "mmlop_engine_batches_total 2.0" in text
    assert f"mmlop_adapter_cache_bytes {float(engine.cache.bytes)}" in text


def test_non_finite_scores_are_refused_not_served(stored):
    """A backbone producing NaN (visual.proj filled with NaN) gives NonFiniteOutputError, which the
    API maps to 500 problem+json; neither the engine nor the library returns score=nan."""
    from api.problem import _core_error_status

    nan_backbone = m.load_backbone(m.TINY_MODEL, "none", device="cpu")
    with torch.no_grad():
        nan_backbone.model.visual.proj.fill_(float("nan"))
    nan_backbone.weights_hash = m.load_backbone(m.TINY_MODEL, "none", device="cpu").weights_hash  # adapters' hash
    engine = InferenceEngine(nan_backbone, max_wait_ms=10)
    px = pixels(nan_backbone, images(2))

    async def go():
        try:
            return await engine.classify("a0", stored["a0"], px, 2)
        finally:
            await engine.stop()

    with pytest.raises(m.NonFiniteOutputError):
        asyncio.run(go())
    with pytest.raises(m.NonFiniteOutputError):
        m.Predictor(nan_backbone).classify(m.load_adapter(stored["a0"], nan_backbone), images(1), top_k=2)
    assert _core_error_status(m.NonFiniteOutputError("x")) == (500, "non-finite-output")


def test_open_vocabulary_cache_ignores_the_order_of_the_names(backbone, stored):
    engine = InferenceEngine(backbone, max_wait_ms=1)
    px = pixels(backbone, images(2))
    names = ["cat", "dog", "shoe", "bag"]

    async def go():
        a = await engine.classify("a0", stored["a0"], px, 4, names)
        b = await engine.classify("a0", stored["a0"], px, 4, list(reversed(names)))
        await engine.stop()
        return a, b

    a, b = asyncio.run(go())
    assert engine.cache.stats.vocab_misses == 1 and engine.cache.stats.vocab_hits == 1
    for ra, rb in zip(a, b):
        assert {p.label: round(p.score, 5) for p in ra} == {p.label: round(p.score, 5) for p in rb}


def test_stepwise_open_vocabulary_features_equal_the_predictor(backbone, stored):
    """Computed a few texts per model-thread step, the class features and scores are those of
    the library's one-pass Predictor (text-side UDC takes its mean over all classes)."""
    engine = InferenceEngine(backbone, max_wait_ms=1, texts_per_step=64)  # one name (62 texts) per step
    pil = images(3)
    names = [f"class {i}" for i in range(7)]

    async def go():
        out = await engine.classify("a2", stored["a2"], pixels(backbone, pil), 3, names)
        await engine.stop()
        return out

    got = asyncio.run(go())
    want = m.Predictor(backbone).classify(m.load_adapter(stored["a2"], backbone), pil, top_k=3, class_names=names)
    for g, w in zip(got, want):
        assert [p.label for p in g] == [p.label for p in w]
        assert [p.score for p in g] == pytest.approx([p.score for p in w], abs=1e-5)


def test_a_long_class_list_does_not_hold_back_another_tenants_images(backbone, stored):
    """Issue 12 A.1: 60 open-vocabulary names are computed in model-thread steps, and an image
    request of another adapter sent meanwhile is answered between two steps, long before the
    class list is done (it used to wait for the whole list). With the template ensemble (1 + 61
    texts a name) a step of 64 texts holds one name: 60 steps, where 400 names took 40 s of the
    suite for the same check."""
    engine = InferenceEngine(backbone, max_wait_ms=1, texts_per_step=64)
    px = pixels(backbone, images(1))
    names = [f"class {i}" for i in range(60)]
    done: dict[str, float] = {}

    async def timed(key, coro):
        await coro
        done[key] = asyncio.get_running_loop().time()

    async def go():
        await engine.classify("a1", stored["a1"], px, 1)  # warm: the adapter is loaded
        await engine.classify("a0", stored["a0"], px, 1)
        vocab = asyncio.ensure_future(timed("vocab", engine.classify("a0", stored["a0"], px, 1, names)))
        while engine.cache.stats.vocab_misses == 0:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # the class list is being computed
        await timed("other", engine.classify("a1", stored["a1"], px, 1))
        await vocab
        await engine.stop()

    asyncio.run(go())
    assert done["other"] < done["vocab"], done


def test_a_classify_image_is_decoded_once_and_that_image_is_used():
    """Issue 12 E.21: the check and the use share one decode (``decode_image`` returns the
    decoded picture that classify preprocesses)."""
    import io

    from PIL import Image

    from api.uploads import decode_image
    from service.settings import Settings

    buf = io.BytesIO()
    Image.new("L", (5, 3), 200).save(buf, format="PNG")
    calls = []
    real = m.open_image

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    m.open_image = counting
    try:
        suffix, image = decode_image(buf.getvalue(), "images[0]", Settings())
    finally:
        m.open_image = real
    assert suffix == ".png" and image.mode == "RGB" and image.size == (5, 3) and image.getpixel((0, 0)) == (200,) * 3
    assert len(calls) == 1


def test_zeroshot_rows_equal_the_predictor_and_share_batches_with_adapters(backbone, stored):
    """Issue 11 item 4: zero-shot rows (frozen encoders, template ensemble) run in the same engine
    batches as adapters' rows and score as ``Predictor.zeroshot``."""
    engine = InferenceEngine(backbone, max_batch_images=4, max_wait_ms=10_000, texts_per_step=64)
    pil = images(2)
    names = ["bag", "coat", "sneaker"]

    async def go():
        px = pixels(backbone, pil)
        await engine.classify("a0", stored["a0"], px[:1], 1)  # warm: adapter loaded
        out = await asyncio.gather(engine.classify_zeroshot(px, 3, names), engine.classify("a0", stored["a0"], px, 1))
        await engine.stop()
        return out[0]

    got = asyncio.run(go())
    want = m.Predictor(backbone).zeroshot(pil, names, top_k=3)
    assert engine.stats.batches == 2  # the warm-up, then zero-shot and adapter rows together
    for g, w in zip(got, want):
        assert [p.label for p in g] == [p.label for p in w]
        assert [p.score for p in g] == pytest.approx([p.score for p in w], abs=1e-5)
