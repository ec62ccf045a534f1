"""HTTP serving benchmark: a real uvicorn server, N concurrent clients over M adapters, batching on vs off.

    python -m benchmarks.http [--backbone mmlop-tiny] [--pretrained none] [--clients 32]
                              [--adapters 32] [--duration 20] [--classes 10] [--device cpu]
                              [--precision fp32|bf16] [--torch-threads 0] [--json]

Builds a throwaway SQLite database and blob store holding M succeeded adaptations (random
`mmlop` adapters, see benchmarks/common.py), then for each mode starts ``uvicorn api.main:app``
with ``MMLOP_BATCHING`` on or off, classifies every adapter once (cold loads are not timed), and
lets N clients (client i uses adapter i mod M), each with one request in flight, send one-image
JSON requests for `duration` seconds. Reports per mode: requests/s (= images/s), p50/p99 latency
(seconds, successful requests), errors (non-200 or transport failures) and the engine's mean
batch size from /metrics; and ``mixed_over_unbatched`` = batched / unbatched throughput.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import mmlop_core as m
from benchmarks.common import REPO, SECRET, percentile, populate_service, sample_images

logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(root: Path, store: dict, backbone: str, pretrained: str, device: str, batching: bool,
                  extra_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(MMLOP_DATABASE_URL=store["database_url"], MMLOP_BLOB_ROOT=str(store["blob_root"]),
               MMLOP_BROKER_URL=f"filesystem://{root / 'broker'}", MMLOP_SECRET_KEY=SECRET,
               MMLOP_BACKBONE=backbone, MMLOP_PRETRAINED=pretrained, MMLOP_DEVICE=device,
               MMLOP_BATCHING="true" if batching else "false", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
               MMLOP_RATE_LIMIT_REQUESTS="0")  # one benchmark tenant: no per-tenant rate limit
    env.update(extra_env)
    log = open(root / f"api-{'on' if batching else 'off'}.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port",
                             str(port), "--log-level", "warning", "--no-access-log"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    _stop_server(proc)
    raise RuntimeError(f"server not ready within 300 s; see {log.name}")


def _stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def _load(base: str, key: str, ids: list[str], clients: int, duration: float, bodies: list[str]) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as client:
        stop_at = time.perf_counter() + duration

        async def one(i: int) -> None:
            n = 0
            while time.perf_counter() < stop_at:
                body = {"images": [bodies[(i + n) % len(bodies)]], "top_k": 1}
                n += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"/classify/{ids[i % len(ids)]}", json=body)
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = exc.__class__.__name__
                if status == "200":
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[status] = errors.get(status, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"requests": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed,
            "p50_s": percentile(latencies, 0.5), "p99_s": percentile(latencies, 0.99),
            "errors": sum(errors.values()), "error_statuses": errors}


def run(backbone_name: str, pretrained: str, clients: int, n_adapters: int, duration: float, classes: int,
        device: str, extra_env: dict[str, str] | None = None) -> dict:
    """Both modes against fresh servers on one store; returns the figures as a dict."""
    backbone = m.load_backbone(backbone_name, pretrained, device="cpu")  # for the adapters' identity
    bodies = [base64.b64encode(b).decode() for b in sample_images(16)]
    out: dict = {"backbone": backbone_name, "device": device,
                 "precision": (extra_env or {}).get("MMLOP_INFERENCE_PRECISION", "fp32"),
                 "torch_threads": int((extra_env or {}).get("MMLOP_TORCH_THREADS", "0")), "clients": clients, "adapters": n_adapters,
                 "classes": classes, "duration_s": duration, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="mmlop-bench-http-") as tmp:
        root = Path(tmp)
        store = populate_service(root, backbone, n_adapters, classes)
        del backbone
        for mode, batching in (("batched", True), ("unbatched", False)):
            proc, base = _start_server(root, store, backbone_name, pretrained, device, batching, extra_env or {})
            try:
                with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {store['key']}"},
                                  timeout=120) as client:
                    for aid in store["ids"]:  # cold loads are not part of the timed run
                        client.post(f"/classify/{aid}", json={"images": bodies[:1], "top_k": 1}).raise_for_status()
                res = asyncio.run(_load(base, store["key"], store["ids"], clients, duration, bodies))
                metrics = httpx.get(base + "/metrics", timeout=30).text
                batches = _metric(metrics, "mmlop_engine_batches_total")
                res["mean_batch"] = _metric(metrics, "mmlop_engine_images_total") / max(batches, 1)
            finally:
                _stop_server(proc)
            out["modes"][mode] = res
    b, u = out["modes"]["batched"], out["modes"]["unbatched"]
    out.update(batched_rps=b["rps"], unbatched_rps=u["rps"], batched_p50_s=b["p50_s"], batched_p99_s=b["p99_s"],
               unbatched_p50_s=u["p50_s"], unbatched_p99_s=u["p99_s"], errors=b["errors"] + u["errors"],
               mixed_over_unbatched=b["rps"] / u["rps"] if u["rps"] else 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="MMLoP HTTP serving benchmark (batching on vs off)")
    parser.add_argument("--backbone", default=m.TINY_MODEL)
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per mode")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="engine forward precision (bf16 autocast on CUDA only)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch threads of the server (0: torch's default; 1 avoids OpenMP spin on a busy CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    a = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    env = {"MMLOP_INFERENCE_PRECISION": a.precision, "MMLOP_TORCH_THREADS": str(a.torch_threads)}
    if a.torch_threads:
        env.update(OMP_NUM_THREADS=str(a.torch_threads), MKL_NUM_THREADS=str(a.torch_threads))
    res = run(a.backbone, a.pretrained, a.clients, a.adapters, a.duration, a.classes, a.device, env)
    if a.json:
        print(json.dumps(res))
        return
    print(f"{res['backbone']} on {res['device']}: {res['clients']} clients over {res['adapters']} adapters, "
          f"{res['duration_s']:.0f} s per mode, one image per request")
    print(f"{'mode':<11}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'batch':>7}")
    for name, r in res["modes"].items():
        print(f"{name:<11}{r['rps']:>9.1f}{r['p50_s'] * 1e3:>9.1f}{r['p99_s'] * 1e3:>9.1f}{r['errors']:>8}"
              f"{r['mean_batch']:>7.1f}")
    print(f"mixed_over_unbatched {res['mixed_over_unbatched']:.2f}")


if __name__ == "__main__":
    main()
