"""What the images install is what the repository holds: every folder of Python code is a
package setuptools finds (a missing ``__init__.py`` left ``infra.console`` out of the images,
so ``meshctl`` failed to import inside every container), and the files a page serves are in
the package data."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Copied by the Dockerfiles as files, never imported from the installed project.
NOT_PACKAGES = ("infra/docker/",)


def packaged() -> set[str]:
    found = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    return set(find_packages(str(ROOT), include=found["include"]))


def test_every_folder_of_python_code_is_a_package() -> None:
    names = packaged()
    missing = []
    for top in ("services", "gateway", "infra", "loadtests"):
        for source in (ROOT / top).rglob("*.py"):
            folder = source.parent.relative_to(ROOT).as_posix()
            if "__pycache__" in folder or folder.startswith(NOT_PACKAGES):
                continue
            if folder.replace("/", ".") not in names:
                missing.append(folder)
    assert not missing, f"not installed (no __init__.py?): {sorted(set(missing))}"


def package_data(package: str) -> set[Path]:
    """The files setuptools takes for ``package``: its patterns, globbed in its folder."""
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]
    folder = ROOT / package.replace(".", "/")
    globs = [*patterns.get("*", []), *patterns.get(package, [])]
    return {path for pattern in globs for path in folder.glob(pattern) if path.is_file()}


def test_the_pages_assets_are_package_data() -> None:
    for package, folder in (("infra.console", "infra/console/static"), ("gateway", "gateway/www")):
        # (A shell script beside the assets is how they were vendored, not served.)
        files = {p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix != ".sh"}
        assert files, folder
        left_out = sorted(p.relative_to(ROOT).as_posix() for p in files - package_data(package))
        assert not left_out, f"not in the package data of {package}: {left_out}"
