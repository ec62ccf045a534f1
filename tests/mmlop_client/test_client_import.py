"""The client installs and imports without torch or the service, and reads problem answers and
local inputs as documented. No server here (tests/mmlop_client/test_client_embedded.py has it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mmlop_client import MMLoPAPIError, MMLoPInputError
from mmlop_client.errors import parse_retry_after
from mmlop_client.uploads import training_upload

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "fashion_mnist"
BLOCKED = ("torch", "torchvision", "open_clip", "mmlop_core", "api", "service", "worker")


def test_imports_with_torch_and_the_service_blocked():
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None  # any import of them fails\n"
        "import mmlop_client, mmlop_client.cli, mmlop_client.__main__ as _m\n"
        "print('imported', mmlop_client.Client.__name__, mmlop_client.AsyncClient.__name__)\n"
    )
    # __main__ runs the CLI: give it --help so it exits 0 after importing everything.
    proc = subprocess.run([sys.executable, "-c", code, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def test_standalone_wheel_requires_no_torch(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO / "mmlop_client", src, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(src), "-w", str(tmp_path / "dist")], check=True, timeout=120,
                   capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("mmlop_client-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    shipped = {p.name for p in (REPO / "mmlop_client").glob("*.py")}
    assert {f"mmlop_client/{n}" for n in shipped} <= names
    requires = [line.split(":", 1)[1].strip().lower() for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]
    assert requires and not any(r.startswith(("torch", "open_clip", "open-clip")) for r in requires)


def _untracked(path: str) -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", path],
                         cwd=REPO, capture_output=True, text=True, check=True, timeout=60).stdout
    return set(out.splitlines())


def test_pip_install_from_the_checkout_leaves_git_status_clean(tmp_path):
    """README's ``pip install ./mmlop_client`` builds in the source folder (setuptools'
    ``build/``, ``*.egg-info``): git must not see it, nor the root wheel ship it."""
    import tomllib

    from setuptools import find_namespace_packages

    before = _untracked("mmlop_client")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "-q", "--target", str(tmp_path / "site"), "./mmlop_client"],
                   cwd=REPO, check=True, timeout=300, capture_output=True)
    assert (tmp_path / "site" / "mmlop_client" / "client.py").is_file()
    assert _untracked("mmlop_client") - before == set()
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = find_namespace_packages(str(REPO), include=find["include"], exclude=find.get("exclude", ()))
    assert "mmlop_client" in found and not [p for p in found if ".build" in p or "egg" in p], found


def test_problem_documents_become_api_errors():
    body = (b'{"type": "https://mmlop.dev/problems/invalid-image", "title": "Unprocessable Content",'
            b' "status": 422, "detail": "not an image", "field": "images[0] (a.png)"}')
    err = MMLoPAPIError.from_response(422, {"content-type": "application/problem+json"}, body)
    assert (err.status, err.kind, err.field, err.detail) == (422, "invalid-image", "images[0] (a.png)",
                                                             "not an image")
    assert "invalid-image" in str(err) and "images[0] (a.png)" in str(err)
    blank = MMLoPAPIError.from_response(405, {}, b'{"type": "about:blank", "detail": "Method Not Allowed"}')
    assert blank.kind is None and blank.detail == "Method Not Allowed"
    html = MMLoPAPIError.from_response(502, {"retry-after": "7"}, b"<html>Bad Gateway</html>")
    assert (html.kind, html.retry_after, html.body) == (None, 7.0, {})
    assert "Bad Gateway" in html.detail


def test_retry_after_as_seconds_or_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait


def _folder(root: Path, per_class: int = 2) -> Path:
    for name in ("bag", "coat"):
        (root / name).mkdir(parents=True)
        for src in sorted((FIXTURES / "train" / name).iterdir())[:per_class]:
            shutil.copy(src, root / name / src.name)
    return root


def test_idempotency_key_follows_the_content(tmp_path):
    folder = _folder(tmp_path / "photos")
    (folder / "bag" / ".DS_Store").write_bytes(b"junk")  # hidden and non-image files are skipped
    (folder / "bag" / "notes.txt").write_text("not a photo")
    keys = []
    for config in ({"epochs": 1}, {"epochs": 1}, {"epochs": 2}):
        with training_upload(folder, config, None) as upload:
            keys.append(upload.idempotency_key)
            with zipfile.ZipFile(upload.files[0][1][1]) as zf:
                assert sorted(zf.namelist()) == sorted(
                    f"{p.parent.name}/{p.name}" for p in folder.glob("*/*.png"))
    assert keys[0] == keys[1] != keys[2]
    (folder / "coat" / "000.png").write_bytes((FIXTURES / "train" / "coat" / "005.png").read_bytes())
    with training_upload(folder, {"epochs": 1}, None) as upload:
        assert upload.idempotency_key != keys[0]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "flat").mkdir() or p / "flat", "has no class folders"),
    (lambda p: (p / "d" / "empty").mkdir(parents=True) or p / "d", "has no images"),
])
def test_unusable_local_input_is_refused_before_any_request(tmp_path, make, message):
    with pytest.raises(MMLoPInputError, match=message):
        training_upload(make(tmp_path), None, None)
