"""The README's five-line client example runs as written against the real embedded service
(what `make run` starts: SQLite, filesystem broker, uvicorn + a Celery worker), from the
repository root, with only the URL changed to the test server's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from utils.factories import make_tenant

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    """The first ```python block of the README's "Python client" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Python client"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_against_the_embedded_service(embedded_stack):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 5 and "http://127.0.0.1:8000" in code
    _, key = make_tenant(embedded_stack.database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(MMLOP_API_KEY=key, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code.replace("http://127.0.0.1:8000",
                                                              embedded_stack.base_url)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Prediction(label=") == 3, proc.stdout
    assert "Prediction(label='bag'" in proc.stdout.split(",")[0], proc.stdout  # top-1 of a bag photo
