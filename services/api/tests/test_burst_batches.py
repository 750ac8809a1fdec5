"""The burst detector's batches (issue 11): each burst of a batch is flagged on its own, so
one failed write loses no other account's flag, and each flag's log line names its own
account's request, not the request that happened to start the batch."""

import asyncio
import io
import json
from typing import Any

import pytest
import structlog

from bulwark.api.anomalies import checks
from bulwark.api.anomalies.bursts import Burst
from bulwark.common.background import BackgroundChecks
from bulwark.common.logging import configure_logging

pytestmark = pytest.mark.security(stride="R", asvs=("V16.3",))


class EveryAccountCrosses:
    """Stands in for Redis's counter: every account of the batch starts a burst."""

    async def observe_many(self, requests: dict[str, int]) -> dict[str, Burst]:
        return {user: Burst(n, baseline=0.0, threshold=1.0) for user, n in requests.items()}


def _anomalies(flagged: list[str]) -> checks.ApiAnomalies:
    anomalies = checks.ApiAnomalies.__new__(checks.ApiAnomalies)  # no database, no Redis
    anomalies._bursts = EveryAccountCrosses()  # type: ignore[assignment]
    anomalies._checks = BackgroundChecks()
    anomalies._requests, anomalies._addresses, anomalies._request_ids = {}, {}, {}
    anomalies._settings = type(
        "Settings", (), {"anomaly_burst_window": 60, "anomaly_burst_floor": 1,
                         "anomaly_burst_factor": 10.0},
    )()  # fmt: skip

    async def flag(user_id: str, kind: str, evidence: dict[str, Any]) -> None:
        if user_id == "u0":
            raise OSError("the insert failed")
        checks._log.info("anomaly_flagged", kind=kind, user_id=user_id)
        flagged.append(user_id)

    anomalies._flag = flag  # type: ignore[method-assign]
    return anomalies


async def test_one_failed_flag_loses_no_other_and_each_line_names_its_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    configure_logging("api", stream=out)
    flagged: list[str] = []
    anomalies = _anomalies(flagged)
    for n in range(5):
        with structlog.contextvars.bound_contextvars(request_id=f"request-of-u{n}"):
            anomalies.observe_request(f"u{n}", "127.0.0.1")
    await asyncio.sleep(checks.BURST_BATCH_SECONDS + 0.2)
    assert sorted(flagged) == ["u1", "u2", "u3", "u4"]  # u0's write failed, alone
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    flags = [line for line in lines if line["event"] == "anomaly_flagged"]
    named = {line["user_id"]: line["request_id"] for line in flags}
    assert named == {f"u{n}": f"request-of-u{n}" for n in range(1, 5)}
    failed = [line for line in lines if line["event"] == "background_check_failed"]
    assert len(failed) == 1
    assert failed[0]["request_id"] == "request-of-u0"
