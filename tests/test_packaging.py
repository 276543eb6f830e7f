"""The installed distribution: one top-level import name, `jobrunner`, holding every package
folder of the repository (setuptools' package-dir maps each under the root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Repository folders installed under the root: jobrunner/ is the root, the others its children.
FOLDERS = ("jobrunner", "config", "tasks", "worker", "benchmarks")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A non-editable install of the tree, as a wheel would lay it out."""
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "--target", str(target), str(ROOT)], check=True, timeout=300)
    return target


def test_one_top_level_name(installed: Path) -> None:
    names = {p.name for p in installed.iterdir() if p.name not in ("bin", "__pycache__")}
    (info,) = [n for n in names if n.endswith(".dist-info")]
    assert names - {info} == {"jobrunner"}
    top_level = installed / info / "top_level.txt"
    if top_level.exists():  # setuptools writes it; the listing above is the real check
        assert top_level.read_text().split() == ["jobrunner"]


def test_every_package_folder_is_installed(installed: Path) -> None:
    """A sub-package left out of pyproject's explicit `packages` would be missing here."""
    for folder in FOLDERS:
        home = installed / "jobrunner" / ("" if folder == "jobrunner" else folder)
        for init in (ROOT / folder).rglob("__init__.py"):
            where = home / init.relative_to(ROOT / folder)
            assert where.is_file(), f"{init.parent.relative_to(ROOT)} is not installed"


def test_data_files_are_installed(installed: Path) -> None:
    assert (installed / "jobrunner/config/default.toml").is_file()
    assert (installed / "jobrunner/config/pipelines/features.toml").is_file()
    assert list((installed / "jobrunner/tasks/sample_data").glob("*.csv"))
    lua = {path.name for path in (ROOT / "worker/broker/lua").glob("*.lua")}
    assert lua, "no Lua scripts in worker/broker/lua"
    assert {path.name for path in (installed / "jobrunner/worker/broker/lua").glob("*.lua")} == lua
