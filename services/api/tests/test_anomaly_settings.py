"""Settings of the API's anomaly detectors (docs/anomalies.md)."""

import pytest

from bulwark.api.settings import from_env
from bulwark.common.settings import SettingsError

BASE = {"DATABASE_URL": "postgresql://x/y"}


def test_defaults() -> None:
    settings = from_env(BASE)
    assert settings.anomaly_burst_window == 60
    assert settings.anomaly_burst_floor == 120
    assert settings.anomaly_burst_factor == 10.0
    assert settings.anomaly_burst_alpha == 0.05
    assert settings.anomaly_burst_cooldown == 3600
    assert settings.anomaly_foreign_threshold == 5
    assert settings.anomaly_foreign_window == 600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ANOMALY_BURST_ALPHA", "0"),
        ("ANOMALY_BURST_ALPHA", "1.5"),
        ("ANOMALY_BURST_FACTOR", "0.5"),
        ("ANOMALY_BURST_FLOOR", "0"),
        ("ANOMALY_BURST_WINDOW_SECONDS", "0"),
        ("ANOMALY_FOREIGN_THRESHOLD", "none"),
    ],
)
def test_out_of_range_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        from_env({**BASE, name: value})
