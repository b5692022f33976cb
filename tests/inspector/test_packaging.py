"""The inspector's files travel with the package."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_installed_wheel_carries_the_templates_and_static_files() -> None:
    """Every file the inspector serves matches the package data globs in pyproject.toml,
    so a wheel built from it has them (an editable install would hide a miss)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["serve.inspector"]
    package = ROOT / "serve" / "inspector"
    files = [p.relative_to(package).as_posix() for sub in ("templates", "static")
             for p in (package / sub).rglob("*") if p.is_file()]
    assert "static/htmx.min.js" in files and "static/htmx.LICENSE" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
