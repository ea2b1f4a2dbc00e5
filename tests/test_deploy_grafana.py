"""deploy/grafana: the dashboard JSON and the provisioning files compose mounts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy_support import (
    COMPOSE_FILE,
    GRAFANA_DIR,
    METRIC_CATALOGUE,
    dashboard_queries,
    iter_panels,
    load_dashboard,
    load_yaml,
    metric_names_in,
)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    for key in ("uid", "title", "panels", "templating", "schemaVersion", "time"):
        assert key in dashboard, key
    panels = list(iter_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert all(isinstance(i, int) for i in ids)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']} overflows the grid"
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']} has no query"
            assert panel["datasource"]["uid"] == "${datasource}"
    positions = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(positions) == len(set(positions)), "two panels at the same position"


def test_templated_variables(dashboard: dict[str, Any]) -> None:
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("source", "provider", "sink"):
        assert variables[name]["type"] == "query"
        assert f"${name}" in " ".join(dashboard_queries(dashboard)), f"${name} unused"


def test_queries_use_only_catalogue_metrics(dashboard: dict[str, Any]) -> None:
    used = metric_names_in(dashboard_queries(dashboard))
    assert used <= METRIC_CATALOGUE, sorted(used - METRIC_CATALOGUE)
    # Every catalogue metric is on the dashboard somewhere.
    assert used == METRIC_CATALOGUE, f"not shown: {sorted(METRIC_CATALOGUE - used)}"


def test_provisioning_points_at_the_compose_mounts() -> None:
    compose = load_yaml(COMPOSE_FILE)
    mounts = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in compose["services"]["grafana"]["volumes"]
    }
    providers = load_yaml(GRAFANA_DIR / "provisioning/dashboards/webhook-bridge.yaml")
    path = providers["providers"][0]["options"]["path"]
    assert mounts[path] == "../grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"
    datasources = load_yaml(GRAFANA_DIR / "provisioning/datasources/prometheus.yaml")
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
