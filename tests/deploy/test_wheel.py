"""The wheel the Dockerfile installs (`pip install .`, not an editable install) holds the whole
platform: every file of `roomee` and `roomee.operator` (modules and package data: migrations,
`script.py.mako`, templates), every module imports from a fresh virtualenv, `roomee --version`
runs and `roomee migrate` applies every service's migrations from the installed files.

The wheel is built (with pip's build isolation, as the Dockerfile does) from a copy of what the Dockerfile copies (so nothing lands in the checkout).
The fresh virtualenv gets the project's dependencies from the test's virtualenv through a path
entry (not its `.pth` files, so the checkout's editable `roomee` stays invisible); the test checks
that `roomee` is the installed one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
import zipfile
from pathlib import Path

import pytest

from tests.deploy.tools import ROOT

# What the Dockerfile copies into its build stage (the wheel is built from exactly this).
BUILD_CONTEXT = ("pyproject.toml", "setup.py", "README.md", "services", "operator")
# The installed package's source trees (pyproject.toml's package-dir).
SOURCES = {"roomee": ROOT / "services" / "roomee", "roomee/operator": ROOT / "operator"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")

IMPORT_EVERY_MODULE = r"""
import importlib, json, pkgutil, sys
import roomee
failed, imported = {}, []
for module in pkgutil.walk_packages(roomee.__path__, "roomee.", onerror=lambda name: failed.setdefault(name, "walk")):
    # A migrations env.py is a script alembic executes inside its own context, not a module
    # (`roomee migrate` below runs each one).
    if module.name.endswith(".migrations.env"):
        continue
    try:
        importlib.import_module(module.name)
        imported.append(module.name)
    except BaseException as exc:
        failed[module.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"file": roomee.__file__, "imported": imported, "failed": failed}))
"""


def _source_files() -> set[str]:
    """Every file of the package trees as the wheel should name it (roomee/..., roomee/operator/...)."""
    files = set()
    for prefix, tree in SOURCES.items():
        for path in tree.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.add(f"{prefix}/{path.relative_to(tree).as_posix()}")
    return files


def _run(*args: str) -> subprocess.CompletedProcess:
    # Never from the checkout: `python -m` puts the working directory first on sys.path, where
    # operator/ would shadow the standard library's operator module.
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir())
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed; returns the virtualenv's directory."""
    work = tmp_path_factory.mktemp("wheel")
    context = work / "context"
    context.mkdir()
    for name in BUILD_CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=IGNORED)
        else:
            shutil.copy2(source, context / name)
    wheels = work / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(context))
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    env_python = env_dir / "bin" / "python"
    site = _run(str(env_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    [wheel] = wheels.glob("roomee-*.whl")
    _run(str(env_python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel))
    # Then the dependencies, from the test's virtualenv, after the fresh site-packages on sys.path
    # (added after the install, so pip never sees the checkout's editable roomee there).
    (Path(site) / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def _wheel_files(env_dir: Path) -> set[str]:
    [wheel] = (env_dir.parent / "wheels").glob("roomee-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if name.startswith("roomee/")}


def test_the_wheel_holds_every_file_of_the_package(installed):
    missing = sorted(_source_files() - _wheel_files(installed))
    assert not missing, f"files of the package the wheel leaves out: {missing}"


def test_every_module_imports_from_the_installed_wheel(installed):
    result = subprocess.run(
        [str(installed / "bin" / "python"), "-c", IMPORT_EVERY_MODULE],
        capture_output=True, text=True, timeout=300, cwd=installed,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert Path(report["file"]).is_relative_to(installed), f"roomee came from {report['file']}, not the wheel"
    assert report["failed"] == {}
    modules = {name.split(".")[1] for name in report["imported"] if name.count(".") >= 1}
    packages = {path.parent.relative_to(SOURCES["roomee"]).parts[0] for path in SOURCES["roomee"].glob("*/__init__.py")}
    assert packages | {"operator"} <= modules


def test_the_installed_command_runs_and_migrates(installed, tmp_path):
    roomee = str(installed / "bin" / "roomee")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ROOMEE_")}
    version = subprocess.run([roomee, "--version"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("roomee ")
    env["ROOMEE_DATA_DIR"] = str(tmp_path / "data")
    migrate = subprocess.run([roomee, "migrate"], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    migrated = {line.split(":")[0] for line in migrate.stdout.splitlines() if ": at " in line}
    assert {"auth", "hotel", "members", "news", "media", "notification", "billing"} <= migrated, migrate.stdout
