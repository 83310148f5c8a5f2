"""An installed ctq (a wheel, not this checkout) has every module and every SQL template: the
package list finds the subpackages, and pyproject's data-files cover each file of sql_templates/,
which ctq.sql.templates_dir finds under <prefix>/share/ctq (no database needed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_of_ctq_is_packaged():
    include = PYPROJECT["packages"]["find"]["include"]
    packaged = set(find_packages(str(REPO), include=include))
    on_disk = {".".join(p.relative_to(REPO).parts[:-1]) for p in (REPO / "ctq").rglob("__init__.py")}
    assert on_disk <= packaged, f"not packaged: {sorted(on_disk - packaged)}"


def test_every_sql_template_is_installed_where_ctq_looks_for_it():
    data_files = PYPROJECT["data-files"]
    covered = {path.resolve() for target, patterns in data_files.items()
               for pattern in patterns for path in REPO.glob(pattern)
               if target == "share/ctq/" + str(path.parent.relative_to(REPO))}
    files = {p.resolve() for p in (REPO / "sql_templates").rglob("*") if p.is_file()}
    missing = sorted(str(p.relative_to(REPO)) for p in files - covered)
    assert not missing, f"sql_templates files no data-files entry installs beside the others: {missing}"
