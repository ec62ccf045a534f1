"""Load: concurrent classify clients over many adapters plus concurrent adaptations (issue 5).

    python -m benchmarks.load [--clients 50] [--adapters 20] [--adaptations 5] [--duration 60]
                              [--backbone mmlop-tiny] [--pretrained none] [--device cpu] [--json]

Loopback only and bounded in count and time: it builds a SQLite database and blob store in a
temporary folder holding one tenant with `adapters` succeeded (random, untrained) adapters,
starts one API process (uvicorn) and one Celery worker on the filesystem broker, then for
`duration` seconds runs `clients` concurrent clients, each classifying one Fashion-MNIST photo
per request with a random adapter, while `adaptations` training jobs (4 photos, 1 epoch) are
submitted at once and followed to the end. Reported: requests, status counts, 5xx and transport
errors (must be 0; a request on a kept-alive connection the server closed is retried once and
counted in ``connection_retries``),
latency p50/p99 (seconds), jobs succeeded and lost (must be 0), API resident memory (RSS)
after a warm-up and at the end, and whether its growth stays within the stated bound
(``MEMORY_BOUND_BYTES`` plus 25 %). Exit status 1 when any of these checks fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import REPO, SECRET, percentile, populate_service, sample_images

logger = logging.getLogger(__name__)

MEMORY_BOUND_BYTES = 128 * 1024 * 1024  # allowed API RSS growth (plus 25 % of the warm RSS)
TRAIN_CONFIG = {"adapter": {"preset": "ivlp"}, "train": {"epochs": 1, "augment": False,
                                                        "batch_size": 4}}


def _rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _env(root: Path, store: dict, args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(MMLOP_DATABASE_URL=store["database_url"], MMLOP_BLOB_ROOT=str(store["blob_root"]),
               MMLOP_BROKER_URL=f"filesystem://{root / 'broker'}", MMLOP_SECRET_KEY=SECRET,
               MMLOP_BACKBONE=args.backbone, MMLOP_PRETRAINED=args.pretrained,
               MMLOP_DEVICE=args.device, MMLOP_RATE_LIMIT_REQUESTS="0",
               MMLOP_QUOTA_MAX_CONCURRENT_JOBS=str(max(20, args.adaptations)),
               MMLOP_TORCH_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


def _spawn(root: Path, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = open(root / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_ready(base: str, proc: subprocess.Popen, root: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API exited; see {root / 'api.log'}")
        try:
            if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("API not ready within 300 s")


async def _drive(base: str, key: str, ids: list[str], args: argparse.Namespace,
                 images: list[bytes], train_files: list) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    retries = [0]
    limits = httpx.Limits(max_connections=args.clients + 10, max_keepalive_connections=args.clients + 10)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as client:
        jobs = []
        for _ in range(args.adaptations):
            files, labels = train_files
            resp = await client.post("/adaptations", files=files,
                                     data={"labels": labels, "config": json.dumps(TRAIN_CONFIG)})
            statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1
            if resp.status_code == 202:
                jobs.append(resp.json()["id"])
            else:
                errors.append(resp.text[:200])
        end = time.monotonic() + args.duration
        rng = random.Random(0)

        async def one_client(n: int) -> None:
            while time.monotonic() < end:
                adapter = ids[rng.randrange(len(ids))]
                img = images[rng.randrange(len(images))]
                t0 = time.perf_counter()
                code = ""
                for attempt in range(2):  # one retry when a kept-alive connection was closed
                    try:
                        resp = await client.post(f"/classify/{adapter}", files=[
                            ("images", ("x.png", img, "image/png"))], data={"top_k": "1"})
                        code = str(resp.status_code)
                        break
                    except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                        code = f"error:{exc.__class__.__name__}"
                        retries[0] += attempt == 0
                    except httpx.HTTPError as exc:
                        code = f"error:{exc.__class__.__name__}"
                        break
                latencies.append(time.perf_counter() - t0)
                statuses[code] = statuses.get(code, 0) + 1

        await asyncio.gather(*(one_client(n) for n in range(args.clients)))
        final: dict[str, str] = {}
        deadline = time.monotonic() + max(120.0, args.duration)
        while time.monotonic() < deadline and len(final) < len(jobs):
            for job in jobs:
                if job in final:
                    continue
                body = (await client.get(f"/adaptations/{job}")).json()
                if body["status"] in ("succeeded", "failed", "canceled"):
                    final[job] = body["status"]
            await asyncio.sleep(0.5)
    server_errors = sum(v for k, v in statuses.items() if k.startswith("5") or k.startswith("error"))
    return {
        "requests": len(latencies), "statuses": statuses, "server_errors": server_errors,
        "connection_retries": retries[0],
        "latency_p50_s": round(percentile(latencies, 0.50), 4),
        "latency_p99_s": round(percentile(latencies, 0.99), 4),
        "throughput_rps": round(len(latencies) / args.duration, 1),
        "jobs_submitted": args.adaptations, "jobs_succeeded": sum(v == "succeeded" for v in final.values()),
        "jobs_lost": args.adaptations - len(final), "submit_errors": errors,
    }


def run(args: argparse.Namespace) -> dict:
    """Start the service, drive the load, stop it; returns the figures."""
    import mmlop_core as m

    with tempfile.TemporaryDirectory(prefix="mmlop-load-") as tmp:
        root = Path(tmp)
        backbone = m.load_backbone(args.backbone, args.pretrained, device="cpu")
        store = populate_service(root, backbone, args.adapters, classes=10)
        del backbone
        env = _env(root, store, args)
        from benchmarks.http import _free_port

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        api = _spawn(root, "api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host",
                                   "127.0.0.1", "--port", str(port), "--log-level", "warning",
                                   "--no-access-log", "--timeout-keep-alive", "75"], env)
        worker = _spawn(root, "worker", [sys.executable, "-m", "celery", "-A", "worker.celery_app",
                                         "worker", "--concurrency", "1", "--loglevel", "WARNING",
                                         "--without-gossip", "--without-mingle"], env)
        try:
            _wait_ready(base, api, root)
            images = sample_images(50)
            photos = sample_images(4)
            train_files = ([("images", (f"{k}.png", photos[k], "image/png")) for k in range(4)],
                           ["left", "left", "right", "right"])
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {store['key']}"},
                              timeout=120) as c:  # warm-up: every adapter loaded once
                for adapter in store["ids"]:
                    c.post(f"/classify/{adapter}", files=[("images", ("x.png", images[0], "image/png"))])
            rss_before = _rss(api.pid)
            t0 = time.monotonic()
            out = asyncio.run(_drive(base, store["key"], store["ids"], args, images, train_files))
            out["wall_s"] = round(time.monotonic() - t0, 1)
            rss_after = _rss(api.pid)
        finally:
            _stop(api)
            _stop(worker)
    bound = MEMORY_BOUND_BYTES + rss_before // 4
    out.update(clients=args.clients, adapters=args.adapters, duration_s=args.duration,
               api_rss_before_mb=round(rss_before / 2**20, 1),
               api_rss_after_mb=round(rss_after / 2**20, 1),
               memory_bound_mb=round(bound / 2**20, 1),
               memory_ok=rss_after - rss_before <= bound)
    out["ok"] = out["server_errors"] == 0 and out["jobs_lost"] == 0 and out["memory_ok"] and \
        out["jobs_succeeded"] == args.adaptations
    return out


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--adapters", type=int, default=20)
    parser.add_argument("--adaptations", type=int, default=5)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--backbone", default="mmlop-tiny")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not (1 <= args.clients <= 500 and 1 <= args.adapters <= 200 and
            0 <= args.adaptations <= 50 and 1 <= args.duration <= 600):
        parser.error("bounds: clients 1-500, adapters 1-200, adaptations 0-50, duration 1-600 s")
    logging.basicConfig(level=logging.WARNING)
    out = run(args)
    if args.json:
        print(json.dumps(out))  # noqa: T201 - benchmark output
    else:
        for k, v in out.items():
            print(f"{k:>20}: {v}")  # noqa: T201 - benchmark output
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
