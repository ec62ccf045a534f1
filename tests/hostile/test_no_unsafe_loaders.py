"""No user-controlled path, URL or pickle reaches the filesystem, the network or a loader.

A static guard over the service code (``api``, ``service``, ``worker``) and the library (minus the
offline ``mmlop_core/eval`` CLI, which the service never imports): no
pickle or ``torch.load``, no outgoing HTTP from request handlers, no ``eval``/``exec``; and the
blob store refuses every key that could leave its root.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.blobs import BlobKeyError, BlobStore

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = [
    (r"\bpickle\b\.(load|loads)\b|\bimport pickle\b|\bcloudpickle\b|\bdill\b", "pickle"),
    (r"\btorch\.load\(", "torch.load (pickle)"),
    (r"\burlopen\(|\brequests\.(get|post)\(|\burllib\.request\b", "outgoing HTTP"),
    (r"(?<![\w.])(eval|exec)\(", "eval/exec"),
    (r"\byaml\.load\(", "yaml.load"),
    (r"\bshell=True\b", "shell=True"),
]


def _sources() -> list[Path]:
    out = []
    for pkg in ("api", "service", "worker", "mmlop_core"):
        out.extend(p for p in (REPO / pkg).rglob("*.py") if "eval" not in p.relative_to(REPO).parts[1:2])
    return out


@pytest.mark.parametrize("pattern,what", FORBIDDEN)
def test_no_unsafe_calls(pattern, what):
    hits = []
    for path in _sources():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(pattern, code) and not code.strip().startswith(('"', "'")):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, f"{what} in service code:\n" + "\n".join(hits)


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../x", "a\\b", "", ".tmp/x", "a//b",
                                 "./a"])
def test_blob_store_refuses_escaping_keys(tmp_path, key):
    with pytest.raises(BlobKeyError):
        BlobStore(tmp_path).path(key)
