"""One snapshot of the whole definitions, so any change to the graph shows in review.

Run ``UPDATE_SNAPSHOTS=1 python -m pytest finance_assets_tests/test_definitions_snapshot.py``
after a deliberate change and commit the new ``snapshots/definitions.json`` with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from finance_assets_tests.harness import shipped_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _resource(resource: Any) -> dict[str, Any]:
    settings = resource.model_dump() if hasattr(resource, "model_dump") else {}
    return {"type": type(resource).__name__, "settings": settings}


def describe(defs: dg.Definitions) -> dict[str, Any]:
    """Assets, checks, jobs, schedules, sensors and resources with their key settings."""
    graph = defs.resolve_asset_graph()
    assets: dict[str, Any] = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets_def = defs.resolve_assets_def(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "tags": dict(sorted(node.tags.items())),
            "metadata": sorted(node.metadata),
            "table": node.metadata.get("dagster/table_name"),
            "columns": [c.name for c in node.metadata["dagster/column_schema"].columns],
            "op": assets_def.op.name,
            "pool": assets_def.op.pool,
            "freshness_policy": repr(node.freshness_policy) if node.freshness_policy else None,
            "automation_condition": (
                repr(node.automation_condition) if node.automation_condition else None
            ),
            "checks": {
                spec.name: {"blocking": spec.blocking, "description": spec.description}
                for spec in sorted(assets_def.check_specs, key=lambda s: s.name)
                if spec.asset_key == key
            },
        }
    jobs = {
        job.name: {
            "executor": job.executor_def.name,
            "assets": sorted(
                k.to_user_string() for k in job.asset_layer.selected_asset_keys
            ),
            "run_config": job.run_config,
        }
        for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name)
        if not job.name.startswith("__")
    }
    schedules = {
        s.name: {
            "job": s.job_name,
            "cron": s.cron_schedule,
            "timezone": s.execution_timezone,
            "default_status": s.default_status.value,
        }
        for s in sorted(defs.schedules or [], key=lambda s: s.name)
    }
    sensors = {
        s.name: {"type": type(s).__name__, "default_status": s.default_status.value}
        for s in sorted(defs.sensors or [], key=lambda s: s.name)
    }
    resources = {k: _resource(v) for k, v in sorted((defs.resources or {}).items())}
    return {
        "assets": assets,
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
        "resources": resources,
    }


@pytest.fixture
def clean_environment(monkeypatch) -> None:
    """The definitions as a fresh clone loads them: no connection configured."""
    for name in list(os.environ):
        if name.startswith("FINANCE_"):
            monkeypatch.delenv(name)


def test_the_definitions_match_the_snapshot(clean_environment) -> None:
    current = json.dumps(describe(shipped_definitions()), indent=2, sort_keys=True) + "\n"
    if os.getenv("UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.exists(), "no snapshot yet: run with UPDATE_SNAPSHOTS=1 and commit it"
    assert current == SNAPSHOT.read_text(), (
        "the definitions changed; if on purpose, run with UPDATE_SNAPSHOTS=1 and commit "
        "finance_assets_tests/snapshots/definitions.json"
    )
