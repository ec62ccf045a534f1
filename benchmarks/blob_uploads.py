"""Many small uploads through the blob store, as ``POST /adaptations`` stores them
(``service.blob_batch.put_all``), then the job's deletion (``delete_prefix``).

    python -m benchmarks.blob_uploads --n 2000 --workers 1 16 --store s3 file [--json]

The S3 server is the one of the standard AWS settings (``--s3-url`` required then) or a local
moto_server (``benchmarks.adapters_s3.s3_server``). Prints one line per store and worker count
(``--json``: one JSON object, ``runs`` holding them): seconds to store ``n`` objects of
``--size`` bytes and to delete them, objects stored and left afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import uuid
from contextlib import nullcontext
from pathlib import Path


def run(store, n: int, size: int, workers: int) -> dict:
    """Seconds to put ``n`` objects of ``size`` bytes with ``workers`` PUTs at a time, then to
    delete their prefix (objects left afterwards must be 0)."""
    from service.blob_batch import put_all

    prefix = f"tenants/bench/adaptations/{uuid.uuid4().hex}"
    payload = bytes(size)
    items = [(f"{prefix}/uploads/{i:06d}.png", lambda: nullcontext(io.BytesIO(payload)), size)
             for i in range(n)]
    t0 = time.perf_counter()
    put_all(store, items, workers=workers)
    put_s = time.perf_counter() - t0
    stored = sum(1 for _ in store.list(prefix))
    t0 = time.perf_counter()
    store.delete_prefix(prefix)
    delete_s = time.perf_counter() - t0
    return {"n": n, "size": size, "workers": workers, "put_s": round(put_s, 2),
            "delete_s": round(delete_s, 2), "stored": stored,
            "left": sum(1 for _ in store.list(prefix))}


def main(argv: list[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="objects per run")
    parser.add_argument("--size", type=int, default=600, help="bytes per object")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--store", nargs="+", choices=["s3", "file"], default=["s3", "file"])
    parser.add_argument("--s3-url", default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    from benchmarks.adapters_s3 import s3_server
    from service.blobs import BlobStore, open_blob_store

    runs: list[dict] = []
    for kind in args.store:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = s3_server(args.s3_url) if kind == "s3" else nullcontext((f"file://{tmp}", "disk"))
            with ctx as (url, where):
                store = open_blob_store(url, Path(tmp) / "cache") if kind == "s3" \
                    else BlobStore(Path(tmp) / "blobs")
                for workers in args.workers:
                    runs.append({"store": kind, "where": where,
                                 **run(store, args.n, args.size, workers)})
                    if not args.json:
                        print(" ".join(f"{k}={v}" for k, v in runs[-1].items()), flush=True)
    if args.json:
        print(json.dumps({"n": args.n, "size": args.size, "runs": runs}))


if __name__ == "__main__":
    main()
