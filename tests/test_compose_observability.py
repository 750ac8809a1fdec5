"""docker-compose.yml's `observability` profile: its Prometheus configuration is valid
(promtool, with the alert rules it loads) and scrapes each service on the METRICS_PORT that
docker-compose.yml gives it. The collector's configuration is not checked here (no collector
binary on our machines)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.test_alert_rules import ROOT, RULES, promtool  # noqa: F401 - the fixture

SCRAPE = ROOT / "deploy" / "prometheus" / "compose-scrape.yml"
COMPOSE = ROOT / "docker-compose.yml"


def test_the_scrape_config_is_valid_with_the_alert_rules(promtool: str, tmp_path: Path) -> None:  # noqa: F811
    # In the container the rules are at /etc/prometheus/; here at their place in the tree.
    config = SCRAPE.read_text().replace("/etc/prometheus/bulwark-alerts.yml", str(RULES))
    (tmp_path / "prometheus.yml").write_text(config)
    result = subprocess.run(  # noqa: S603 - promtool on our own file
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_each_service_on_its_metrics_port() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    expected = {
        f"{name}:{services[name]['environment']['METRICS_PORT']}"
        for name in ("auth", "api", "ratelimit")
    }
    scrape = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    targets = {
        target for job in scrape for group in job["static_configs"] for target in group["targets"]
    }
    assert targets == expected
    mounted = services["prometheus"]["volumes"]
    assert "./deploy/prometheus/compose-scrape.yml:/etc/prometheus/prometheus.yml:ro" in mounted
    assert "observability" in services["prometheus"]["profiles"]
    assert "observability" in services["otel-collector"]["profiles"]
