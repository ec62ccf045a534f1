"""docker/Dockerfile and docker/entrypoint.sh refer to things that exist, and `pip install .`
(what the image does) ships everything the service needs at run time."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "docker" / "Dockerfile.dockerignore"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
PACKAGES = ("mmlop_core", "api", "worker", "service")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _last(name: str) -> str:
    values = [rest for word, rest in _instructions() if word == name]
    assert values, f"Dockerfile has no {name}"
    return values[-1]


def _module_path(module: str) -> Path:
    """Repository file that provides a dotted module (pkg/mod.py or pkg/mod/__init__.py)."""
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise AssertionError(f"module {module} is not in the repository ({base}.py)")


def _commands_in_use() -> dict[str, list[str]]:
    """Dockerfile CMD plus the command of every compose service built from the Dockerfile."""
    commands = {"Dockerfile-CMD": json.loads(_last("CMD"))}
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if "build" in service:
            commands[f"compose-{name}"] = service["command"]
    return commands


def test_entrypoint_exists_is_executable_and_copied():
    entrypoint = json.loads(_last("ENTRYPOINT"))
    assert entrypoint == ["/app/docker/entrypoint.sh"]
    assert ENTRYPOINT.is_file() and os.access(ENTRYPOINT, os.X_OK)
    copies = [rest for word, rest in _instructions() if word == "COPY"]
    assert any("docker/entrypoint.sh" in rest and rest.split()[-1] == "./docker/entrypoint.sh" for rest in copies)
    assert _last("WORKDIR") == "/app"
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)


def test_entrypoint_execs_the_command_and_expands_shortcuts(tmp_path):
    env = {**os.environ, "MMLOP_BLOB_ROOT": str(tmp_path / "blobs"), "MMLOP_TASK_QUEUE": "q1"}
    out = subprocess.run([str(ENTRYPOINT), "echo", "hello"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hello"
    assert (tmp_path / "blobs").is_dir()
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("uvicorn", "celery", "alembic"):
        (fake_bin / tool).write_text(f'#!/bin/sh\necho {tool} "$@"\n')
        (fake_bin / tool).chmod(0o755)
    env["PATH"] = f"{fake_bin}:{env['PATH']}"
    run = lambda *args: subprocess.run([str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert run("api")[:2] == ["uvicorn", "api.main:app"]
    worker = run("worker")
    assert worker[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert worker[worker.index("--concurrency") + 1] == "1" and worker[worker.index("-Q") + 1] == "q1"
    assert run("migrate") == ["alembic", "upgrade", "head"]


@pytest.mark.parametrize("command", list(_commands_in_use().values()), ids=list(_commands_in_use()))
def test_commands_name_modules_that_exist(command):
    assert len(_commands_in_use()) >= 4, "expected CMD + migrate, api, worker"
    if command[0] == "uvicorn":
        module, _, attr = command[1].partition(":")
        source = _module_path(module).read_text()
        assert re.search(rf"^{attr}\s*[:=]", source, re.M), f"{module} defines no {attr}"
    elif command[0] == "celery":
        _module_path(command[command.index("-A") + 1])
    elif command[0] == "alembic":
        assert (REPO / "alembic.ini").is_file() and (REPO / "migrations" / "env.py").is_file()
    else:
        raise AssertionError(f"unexpected command {command}")


def test_image_is_non_root_and_installs_the_project():
    user = _last("USER").split(":")[0]
    assert user not in {"root", "0"}
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert re.search(r"pip install (--no-deps )?\.(\s|$)", runs)
    assert "useradd" in runs
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert all("python" in f for f in froms)


def ignored(path: str) -> bool:
    """Whether docker/Dockerfile.dockerignore keeps ``path`` (relative, posix) out of the build context."""
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or pattern != "**" and path.startswith(pattern + "/"):
            result = not negate
        elif pattern == "**":
            result = not negate
    return result


def test_copied_paths_exist_and_survive_the_dockerignore():
    for word, rest in _instructions():
        if word != "COPY" or "--from=" in rest:
            continue
        sources = [part for part in rest.split()[:-1] if not part.startswith("--")]
        for source in sources:
            if source == ".":
                continue
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source), f"COPY {source}: excluded by {DOCKERIGNORE.name}"
    copied = {source.rstrip("/") for word, rest in _instructions() if word == "COPY" for source in rest.split()[:-1]}
    for package in PACKAGES:
        assert package in copied, f"the image does not COPY {package}"
        assert not ignored(f"{package}/__init__.py"), f"{package} is excluded from the build context"


@pytest.fixture(scope="module")
def wheel_and_sources(tmp_path_factory) -> tuple[Path, Path]:
    """`pip wheel .` of a copy of the packages (what `pip install .` in the image installs)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    for package in PACKAGES + ("benchmarks",):
        if (REPO / package).is_dir():
            shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel, src


def test_pip_install_ships_package_data(wheel_and_sources):
    """A non-editable install (the image) must carry every file of the packages, e.g.
    mmlop_core/model_configs/*.json (fix: [tool.setuptools.package-data] in pyproject.toml)."""
    wheel, src = wheel_and_sources
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        path.relative_to(src).as_posix()
        for package in PACKAGES
        if (src / package).is_dir()
        for path in (src / package).rglob("*")
        if path.is_file()
    }
    missing = sorted(wanted - shipped)
    assert not missing, f"pip install . would not ship: {missing}"


def test_image_layout_migrates_and_imports(wheel_and_sources, tmp_path):
    """The runtime image in miniature: installed packages + /app holding only alembic.ini and
    migrations/; `alembic upgrade head` and the API/worker imports work from there."""
    wheel, _ = wheel_and_sources
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(REPO / "alembic.ini", app)
    shutil.copytree(REPO / "migrations", app / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(PYTHONPATH=str(site), MMLOP_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
               MMLOP_BLOB_ROOT=str(tmp_path / "blobs"), MMLOP_BROKER_URL=f"filesystem://{tmp_path / 'broker'}",
               MMLOP_BACKBONE="mmlop-tiny", MMLOP_PRETRAINED="none", MMLOP_DEVICE="cpu")
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=app, env=env, capture_output=True, text=True, timeout=300)
    migrated = run("-m", "alembic", "upgrade", "head")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    probe = run("-c", "import mmlop_core, api.main, worker.celery_app, service.settings, open_clip; "
                      "print(mmlop_core.__file__); print('mmlop-tiny' in open_clip.list_models()); "
                      "print(mmlop_core.load_backbone('mmlop-tiny', 'fmnist').weights_hash[:12])")
    assert probe.returncode == 0, probe.stderr[-3000:]
    location, registered, tiny_hash = probe.stdout.split()[-3:]
    assert location.startswith(str(site)), f"imported {location}, not the installed copy"
    assert registered == "True", "mmlop-tiny not registered from the installed package"
    # the shipped tiny weights load (sha256-verified) from the installed wheel, offline
    assert tiny_hash == __import__("mmlop_core").load_backbone("mmlop-tiny", "fmnist").weights_hash[:12]


def _build_stage_copies() -> list[tuple[str, str]]:
    """(source, destination) of every COPY of the build stage before its ``pip install ... .``."""
    copies, stage = [], 0
    for word, rest in _instructions():
        if word == "FROM":
            stage += 1
        elif stage == 1 and word == "RUN" and re.search(r"pip install (--no-deps )?\.(\s|$)", rest):
            return copies
        elif stage == 1 and word == "COPY" and "--from=" not in rest:
            *sources, dest = [part for part in rest.split() if not part.startswith("--")]
            copies += [(source, dest) for source in sources]
    raise AssertionError("the build stage has no `pip install .`")


def test_wheel_of_what_the_dockerfile_copies_runs_every_entry_point(tmp_path):
    """The image's `pip install .` in miniature, from exactly the files the Dockerfile copies
    through its dockerignore: every console script declared in pyproject.toml must run.
    (`mmlop = "mmlop_cli:main"` named a top-level module the image never copied, so
    `docker compose run api mmlop tenant create acme` failed with ModuleNotFoundError.)"""
    import tomllib

    src = tmp_path / "src"
    for source, dest in _build_stage_copies():
        origin, dest_rel = REPO / source, dest.removeprefix("./").rstrip("/")
        files = sorted(p for p in origin.rglob("*") if p.is_file()) if origin.is_dir() else [origin]
        for path in files:
            if ignored(path.relative_to(REPO).as_posix()):
                continue
            inner = path.relative_to(origin).as_posix() if origin.is_dir() else \
                (path.name if dest.endswith("/") else "")
            target = src / dest_rel / inner if inner else src / dest_rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    scripts = tomllib.loads((src / "pyproject.toml").read_text())["project"].get("scripts", {})
    assert "mmlop" in scripts, scripts
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    # The installed copy first, then the dependencies; `-S` skips the .pth files, so the
    # development venv's editable install cannot supply a module the wheel lacks.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    empty = tmp_path / "cwd"
    empty.mkdir()
    run = lambda *args: subprocess.run([sys.executable, "-S", *args], cwd=empty, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    for name, target in scripts.items():
        script = site / "bin" / name
        assert script.is_file(), f"{name} = {target!r} was not installed as a script"
        module = target.split(":")[0]
        where = run("-c", f"import {module}; print({module}.__file__)")
        assert where.returncode == 0, f"{name} = {target!r}: {where.stderr[-2000:]}"
        assert where.stdout.strip().startswith(str(site)), f"{module} came from {where.stdout.strip()}, not the wheel"
        ran = run(str(script), "--help")
        assert ran.returncode == 0, f"{name} --help: {ran.stderr[-2000:]}"
        if name == "mmlop":  # the service's and the harness's groups are mounted too
            for group in ("train", "classify", "info", "tenant", "eval"):
                assert group in ran.stdout, (group, ran.stdout)
            ran = run(str(script), "tenant", "--help")
            assert ran.returncode == 0 and "create" in ran.stdout, ran.stderr[-2000:]
