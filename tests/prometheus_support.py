"""A real Prometheus server on loopback for tests: scrapes the given targets, loads rule files.

Debian's `prometheus` binary, which `make tools` puts next to the venv's python
(`find_tool`); without it the test is skipped with the reason, or fails when
WB_TEST_REQUIRE_PROMTOOL is set. The shipped rules are loaded unchanged: a test
that cannot wait for a long `for:` checks that the expression is true and that
Prometheus reports the alert pending (or firing) on /api/v1/alerts.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from deploy.broker import free_port
from tests.deploy_support import find_tool, require_tool


class RealPrometheus:
    def __init__(self, web_port: int) -> None:
        self.api = f"http://127.0.0.1:{web_port}/api/v1"

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.api}/{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()["data"]

    def targets(self) -> list[dict[str, Any]]:
        return list(self.get("targets")["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.get("rules")["groups"] for rule in group["rules"]]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector: [{"metric": {...}, "value": [ts, "v"]}, ...]."""
        return list(self.get("query", query=expr)["result"])

    def value(self, expr: str) -> float | None:
        """The single value of `expr` now, or None when it selects nothing."""
        found = self.query(expr)
        assert len(found) <= 1, found
        return float(found[0]["value"][1]) if found else None

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        """Active alerts (pending or firing), with their labels and state."""
        found = list(self.get("alerts")["alerts"])
        return [a for a in found if name is None or a["labels"]["alertname"] == name]

    def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if predicate():
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"Prometheus: timed out waiting for {what}"
            time.sleep(0.5)


@contextmanager
def real_prometheus(
    tmp_path: Path,
    targets: Mapping[str, int],
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
) -> Iterator[RealPrometheus]:
    """Prometheus scraping 127.0.0.1:<port> per component (label `component`), evaluating
    `rule_files` every `interval`; stopped at exit."""
    binary = find_tool("prometheus")
    require_tool("prometheus", binary, "WB_TEST_REQUIRE_PROMTOOL")
    assert binary is not None
    web = free_port()
    jobs = "\n".join(
        f"""  - job_name: webhook-bridge-{name}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
        labels:
          component: {name}"""
        for name, port in targets.items()
    )
    rules = "\n".join(f"  - {path}" for path in rule_files)
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
rule_files:
{rules or "  []"}
scrape_configs:
{jobs}
""")
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prometheus = RealPrometheus(web)
    try:
        prometheus.wait_for(
            lambda: len(prometheus.targets()) == len(targets), 60, "Prometheus to start"
        )
        yield prometheus
    finally:
        server.terminate()
        server.wait(timeout=20)
