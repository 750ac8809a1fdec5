"""Reading a service's Prometheus endpoint in the integration tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import RunningStack

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(stack: RunningStack, service: str) -> tuple[str, Series]:
    """The text of ``service``'s metrics endpoint and its samples by (name, labels)."""
    url = stack.config.metrics_url(service)
    assert url is not None, f"{service} has no metrics endpoint in the test stack"
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, response.text
    series: Series = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, series


def value(series: Series, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when absent: not yet recorded)."""
    return series.get((name, frozenset(labels.items())), 0.0)
