"""service/logs.py (issue 12, D.16): one line format with request id and job id; JSON option."""

from __future__ import annotations

import json
import logging
import re

import pytest

from service.logs import configure_logging, job_context, request_id_var

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR|DEBUG) \[[^\]]+\] "
                  r"\S+ request_id=\S+ job_id=\S+: .*")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_lines_carry_request_and_job_id(restore_logging, capsys):
    configure_logging("text", "INFO")
    token = request_id_var.set("req-1")
    try:
        with job_context("job-9"):
            logging.getLogger("worker.tasks").info("job %s attempt %d succeeded", "job-9", 1)
    finally:
        request_id_var.reset(token)
    logging.getLogger("api.x").warning("no context")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(LINE.match(line) for line in lines), lines
    assert "worker.tasks request_id=req-1 job_id=job-9: job job-9 attempt 1 succeeded" in lines[0]
    assert "request_id=- job_id=-: no context" in lines[1]


def test_json_lines_are_one_object_each(restore_logging, capsys):
    configure_logging("json", "INFO")
    with job_context("job-9"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("worker.tasks").exception("job %s crashed", "job-9")
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["message"] == "job job-9 crashed" and record["job_id"] == "job-9"
    assert record["request_id"] == "-" and record["level"] == "ERROR"
    assert record["logger"] == "worker.tasks" and "RuntimeError: boom" in record["exc_info"]


def test_uvicorn_and_celery_loggers_use_the_one_format(restore_logging, capsys):
    configure_logging("text", "INFO")
    for name in ("uvicorn.error", "celery.worker.strategy"):
        logging.getLogger(name).warning("hello from %s", name)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(LINE.match(line) for line in lines), lines


def test_celerys_task_succeeded_line_is_not_written(restore_logging, capsys):
    configure_logging("text", "INFO")
    logging.getLogger("celery.app.trace").info(
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
        {"name": "mmlop.train_adaptation", "id": "x", "runtime": 1.0, "return_value": "'canceled'"})
    assert capsys.readouterr().err == ""


def test_migrations_log_json_when_the_logs_are_json(tmp_path):
    """With MMLOP_LOG_FORMAT=json, `alembic upgrade head` (run by `make run` and the container's
    `migrate`) writes JSON objects too: its lines were alembic's own plain-text format."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MMLOP_LOG_FORMAT": "json", "MMLOP_DATABASE_URL": f"sqlite:///{tmp_path}/m.db",
           "PYTHONPATH": str(repo)}
    proc = subprocess.run([sys.executable, "-m", "alembic", "-c", str(repo / "alembic.ini"), "upgrade", "head"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert any("Running upgrade" in json.loads(line)["message"] for line in lines), lines
    for line in lines:
        assert json.loads(line)["logger"].startswith("alembic"), line
