"""A real S3 wire-protocol server for tests: moto's standalone server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_server_command(port: int) -> list[str]:
    """argv of ``moto_server`` (next to this interpreter, else on PATH) on 127.0.0.1:port."""
    exe = Path(sys.executable).with_name("moto_server")
    exe = str(exe) if exe.exists() else shutil.which("moto_server")
    if exe is None:
        raise RuntimeError("moto_server not found; pip install -e '.[dev]' (moto[server])")
    return [exe, "-H", "127.0.0.1", "-p", str(port)]


def start_moto_server(port: int | None = None, log: Path | None = None
                      ) -> tuple[subprocess.Popen, str]:
    """Start moto_server and wait until it answers; returns (process, endpoint URL)."""
    port = port or free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(moto_server_command(port), stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **S3_ENV})
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto_server did not answer within 60 s")


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server process started here and wait for it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_bucket(endpoint: str, name: str | None = None) -> str:
    """Create a fresh bucket on the server at ``endpoint``; returns its name."""
    import boto3

    name = name or f"mmlop-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).create_bucket(Bucket=name)
    return name


class TcpProxy:
    """A TCP forwarder 127.0.0.1:port -> target that a test can cut (``down``) and restore
    (``up``): the object store "goes down" for the processes behind it, its data stays."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._server: socket.socket | None = None
        self.up()

    @property
    def endpoint(self) -> str:
        """URL of the proxied S3 endpoint."""
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Listen and forward (again)."""
        import threading

        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut every open connection (new ones are refused)."""
        srv, self._server = self._server, None
        if srv is not None:
            try:  # wakes the blocked accept(); close() alone lets it take one more connection
                srv.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            srv.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def role_stack(root: Path, role: str, env: dict[str, str], database_url: str):
    """A ``Stack`` for one process role (api, api2, worker...) in its own working directory and
    temp dir, so API and workers share nothing on the filesystem."""
    from utils.stack import Stack

    cwd = root / role
    (cwd / "tmp").mkdir(parents=True, exist_ok=True)
    return Stack(env={**env, "TMPDIR": str(cwd / "tmp")}, cwd=cwd, database_url=database_url,
                 blob_root=cwd / "var" / "blobs")


def s3_objects(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every object key in ``bucket`` under ``prefix`` (read with a plain boto3 client)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def s3_etag(endpoint: str, bucket: str, key: str) -> str:
    """The ETag of one object, unquoted (``<md5>-<parts>`` for a multipart upload)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing"
                        ).head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def s3_delete(endpoint: str, bucket: str, key: str) -> None:
    """Delete one object behind the service's back (a vanished object)."""
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).delete_object(Bucket=bucket, Key=key)


@contextmanager
def s3_service(root: Path, s3_endpoint: str, broker_url: str, apis: tuple[str, ...] = ("api",),
               extra_env: dict[str, str] | None = None) -> Iterator[SimpleNamespace]:
    """API replicas ``apis`` and one worker, each in its own cwd and TMPDIR, sharing only a fresh
    PostgreSQL database, a Redis queue and ``s3://<fresh bucket>/mmlop`` (the APIs reach it
    through ``proxy``, the worker through ``worker_proxy``: ``TcpProxy``s in front of
    ``s3_endpoint`` that a test cuts separately). Yields apis (name -> Stack), api (the first),
    worker, proxy, worker_proxy, bucket, endpoint, database_url."""
    from utils.stack import (REDIS_TEST_DB, base_env, create_pg_database, delete_redis_queue,
                             drop_pg_database)

    database_url = create_pg_database()
    queue = f"mmlop-s3-{uuid.uuid4().hex[:10]}"
    bucket = create_bucket(s3_endpoint)
    proxy = TcpProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    worker_proxy = TcpProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    env = base_env({"MMLOP_DATABASE_URL": database_url, "MMLOP_BROKER_URL": broker_url,
                    "MMLOP_TASK_QUEUE": queue, "MMLOP_BLOB_URL": f"s3://{bucket}/mmlop",
                    **S3_ENV, "AWS_ENDPOINT_URL": proxy.endpoint, **(extra_env or {})})
    stacks = {name: role_stack(root, name, env, database_url) for name in apis}
    worker = role_stack(root, "worker", {**env, "AWS_ENDPOINT_URL": worker_proxy.endpoint},
                        database_url)
    try:
        worker.migrate()
        worker.start_worker()
        for stack in stacks.values():
            stack.start_api()
            stack.wait_ready()
        yield SimpleNamespace(apis=stacks, api=stacks[apis[0]], worker=worker, proxy=proxy,
                              worker_proxy=worker_proxy, bucket=bucket, endpoint=s3_endpoint,
                              database_url=database_url)
    finally:
        for stack in (*stacks.values(), worker):
            stack.stop()
        proxy.down()
        worker_proxy.down()
        drop_pg_database(database_url)
        delete_redis_queue(REDIS_TEST_DB, queue)


def submit_small(client) -> str:
    """A 2-class, 4-photo, 1-epoch job; returns its id."""
    import json

    from utils.factories import image_multipart, photos

    files, data = image_multipart(photos("train", 2, ["bag", "coat"]))
    config = {"adapter": {"preset": "ivlp"}, "train": {"epochs": 1, "augment": False,
                                                       "batch_size": 4}}
    resp = client.post("/adaptations", files=files, data={**data, "config": json.dumps(config)})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def classify(client, job_id: str):
    """POST /classify/{id} with one photo."""
    from utils.factories import photos

    (_label, path), = photos("test", 1, ["bag"])
    return client.post(f"/classify/{job_id}",
                       files=[("images", (path.name, path.read_bytes(), "image/png"))])
