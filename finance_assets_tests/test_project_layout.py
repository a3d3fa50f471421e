"""The project as the ``dg`` CLI sees it: the component is listed, the definitions check,
and ``dg scaffold defs`` makes a second instance that loads beside the first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DG = str(Path(sys.executable).with_name("dg"))
COMPONENT = "finance_assets.components.FinanceApiIngestion"


def dg(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """``dg`` in the project's environment with no connection configured."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FINANCE_", "DAGSTER_"))}
    clean.update(VIRTUAL_ENV=sys.prefix, **env)
    return subprocess.run(
        [DG, *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=180
    )


def test_dg_lists_the_component_and_checks_the_definitions() -> None:
    listed = dg("list", "components", "--json")
    assert listed.returncode == 0, listed.stderr
    assert COMPONENT in {c["key"] for c in json.loads(listed.stdout)["items"]}
    checked = dg("check", "defs")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SupersessionWarning" not in checked.stdout + checked.stderr


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project's code and configuration in a folder of its own, to scaffold into."""
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy)
    shutil.copytree(ROOT / "finance_assets", copy / "finance_assets",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return copy


def test_a_scaffolded_second_instance_loads_beside_the_first(project_copy: Path) -> None:
    made = dg("scaffold", "defs", COMPONENT, "eu_books", cwd=project_copy)
    assert made.returncode == 0, made.stdout + made.stderr
    yaml = (project_copy / "finance_assets" / "defs" / "eu_books" / "defs.yaml").read_text()
    assert "name: eu_books" in yaml and "{{ env.EU_BOOKS_API_CLIENT_SECRET }}" in yaml
    probe = (
        "import json; from finance_assets.definitions import defs; d = defs(); "
        "print(json.dumps([sorted(j.name for j in d.resolve_all_job_defs()), "
        "sorted(d.resources), d.resources['eu_books_duckdb'].database]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINANCE_")}
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=project_copy, capture_output=True, text=True,
        env={**env, "PYTHONPATH": str(project_copy)}, timeout=120,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    jobs, resources, database = json.loads(loaded.stdout)
    assert {"finance_daily", "full_refresh", "eu_books_daily", "eu_books_full_refresh"} <= set(jobs)
    assert {"finance_api", "duckdb", "eu_books_api", "eu_books_duckdb"} == set(resources)
    assert database == "data/eu_books_sandbox.duckdb"  # its own file, not the first's


def test_dg_list_defs_shows_freshness_blocking_and_schema_checks_and_the_sensor() -> None:
    listed = dg("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    invoices = next(a for a in defs["assets"] if a["asset_key"] == "invoices")
    assert "Freshness: late 26 h, stale 50 h" in invoices["description"]
    checks = {c["key"]: c for c in defs["asset_checks"] if c["asset_key"] == "invoices"}
    for name in ("nullability", "primary_key", "quarantine"):
        assert checks[f"invoices:{name}"]["description"].startswith("Blocking.")
    assert {"invoices:undocumented_fields", "invoices:column_schema_change"} <= set(checks)
    assert sorted(s["name"] for s in defs["sensors"]) == [
        "finance_marts_automation", "finance_run_failure_sensor"]
