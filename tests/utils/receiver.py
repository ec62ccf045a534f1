"""A real HTTP webhook receiver on 127.0.0.1 for tests: records every request (path, headers,
body, arrival time) and answers per path: ``/fail<N>/...`` answers 500 to the first N requests
on that path, then 200; ``/redirect/...`` answers 302 to the cloud metadata address; any other
path answers 200."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


class Receiver:
    """``with Receiver() as r: ... r.url("/x") ... r.wait_for("/x", 3)``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer._lock:
                    outer.requests.append(Received(self.path, dict(self.headers.items()), body,
                                                   time.monotonic()))
                    outer._seen[self.path] += 1
                    seen = outer._seen[self.path]
                match = re.match(r"/fail(\d+)/", self.path)
                status = 500 if match and seen <= int(match.group(1)) else 200
                status = 302 if self.path.startswith("/redirect/") else status
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, path: str, count: int = 1, timeout: float = 60) -> list[Received]:
        """The requests on ``path`` once there are ``count`` of them (TimeoutError after
        ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                got = [r for r in self.requests if r.path == path]
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise TimeoutError(f"{len(got)} of {count} requests on {path} after {timeout} s")
