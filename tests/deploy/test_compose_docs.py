"""The documented Compose command sequences work as written: README "Adding a GPU host" and
docker/README.md "Start" are run line by line in a copy of the compose files, from an environment
without the settings (each ``cat > FILE <<EOF`` writes its file; each ``docker compose ...``
runs as ``docker-compose ... config``: no Docker daemon here), so a follow-up command (``logs``,
an upgrade) sees the same settings as the first ``up``. And the GPU host's workers get every
queue setting of the central host."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_compose import REPO, SECRETS, _env
from tests.deploy.test_compose_hosts import CENTRAL, GPU_HOST_FILE, _load

_HEREDOC = re.compile(r"^cat > (\S+) <<'?EOF'?$")


def _sh_block(doc: Path, heading: str) -> list[str]:
    """Lines of the first ```sh block after ``heading`` in ``doc``."""
    text = doc.read_text()
    rest = text[text.index(heading):]
    start = rest.index("```sh\n") + len("```sh\n")
    return rest[start:rest.index("```", start)].splitlines()


def _run_documented(lines: list[str], root: Path) -> list[dict]:
    """Run the block in ``root``: heredocs write files (secrets made up), every ``docker compose``
    line runs as ``config``; returns each command's parsed configuration."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MMLOP_", "POSTGRES_", "MINIO_", "AWS_"))}
    configs, i = [], 0
    while i < len(lines):
        line = lines[i].split("  #")[0].strip()
        match = _HEREDOC.match(line)
        if match:
            body = []
            i += 1
            while lines[i] != "EOF":
                key, _, value = lines[i].partition("=")
                body.append(f"{key}={SECRETS[key] if '$(' in value or '<' in value else value}")
                i += 1
            (root / match.group(1)).write_text("\n".join(body) + "\n")
        elif line.startswith("docker compose"):
            words = shlex.split(line)[2:]
            options = []
            while words and words[0].startswith("-"):
                options += words[:2] if words[0] in ("-f", "--file", "--env-file") else words[:1]
                words = words[2:] if words[0] in ("-f", "--file", "--env-file") else words[1:]
            assert words, f"no subcommand in {line!r}"
            proc = subprocess.run([shutil.which("docker-compose"), *options, "config"], cwd=root,
                                  env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, f"{line!r} fails as documented: {proc.stderr}"
            configs.append(yaml.safe_load(proc.stdout))
        else:
            assert not re.match(r"^[A-Z_]+=\S+ .*docker compose", line), \
                f"{line!r}: a setting only on one command is lost by the next one"
        i += 1
    return configs


@pytest.fixture
def copy(tmp_path) -> Path:
    """The compose files in a scratch folder laid out like the checkout."""
    shutil.copy(REPO / "docker-compose.yml", tmp_path)
    shutil.copytree(REPO / "docker", tmp_path / "docker",
                    ignore=shutil.ignore_patterns(".env"))
    return tmp_path


def test_adding_a_gpu_host_runs_as_written(copy):
    configs = _run_documented(_sh_block(REPO / "README.md", "## Adding a GPU host"), copy)
    central = [c for c in configs if "postgres" in c["services"]]
    gpu = [c for c in configs if "postgres" not in c["services"]]
    assert len(central) >= 2 and len(gpu) >= 2  # up, then logs: each reads the same settings
    for config in central:  # every later command keeps the private bind address
        assert CENTRAL in str(config["services"]["postgres"]["ports"])
    for config in gpu:
        env = _env(config, "worker")
        assert f"@{CENTRAL}:5432/" in env["MMLOP_DATABASE_URL"]
        assert env["MMLOP_SECRET_KEY"] == SECRETS["MMLOP_SECRET_KEY"]
        assert config["services"]["worker"]["hostname"] == "gpu2-worker0"


def test_docker_readme_start_runs_as_written(copy):
    configs = _run_documented(_sh_block(REPO / "docker" / "README.md", "## Start"), copy)
    assert configs and _env(configs[0], "api")["MMLOP_SECRET_KEY"] == SECRETS["MMLOP_SECRET_KEY"]


def test_gpu_host_passes_every_queue_setting_of_the_central_host():
    """Every ``*_queue`` setting (a training worker publishes to each: training re-enqueues,
    webhook deliveries) reaches the GPU host's workers with the central host's value."""
    from service.settings import Settings

    queues = {f"MMLOP_{name.upper()}": f"custom-{name}" for name in Settings.model_fields
              if name.endswith("_queue")}
    assert {"MMLOP_TASK_QUEUE", "MMLOP_WEBHOOK_QUEUE"} <= set(queues)
    from tests.deploy.test_compose import COMPOSE_FILE

    env = {**SECRETS, "MMLOP_CENTRAL_HOST": CENTRAL, **queues}
    central = _env(_load(COMPOSE_FILE, env), "worker")
    gpu = _env(_load(GPU_HOST_FILE, env), "worker")
    for name, value in queues.items():
        assert central[name] == gpu[name] == value, name
