"""Background checks: bounded, time-limited, and their failures never escape."""

import asyncio

import pytest
import structlog

from bulwark.common.background import BackgroundChecks


async def _settle(checks: BackgroundChecks) -> None:
    for _ in range(100):
        if not checks.running:
            return
        await asyncio.sleep(0.01)


async def test_a_failing_check_is_logged_and_swallowed() -> None:
    checks = BackgroundChecks()

    async def broken() -> None:
        raise ConnectionError("redis is down")

    with structlog.testing.capture_logs() as logs:
        assert checks.spawn("broken", broken())
        await _settle(checks)
    assert [(e["event"], e["check"], e["error_type"]) for e in logs] == [
        ("background_check_failed", "broken", "ConnectionError")
    ]


async def test_a_full_set_drops_new_checks_unrun() -> None:
    checks = BackgroundChecks(limit=1)
    release = asyncio.Event()
    ran: list[str] = []

    async def waits() -> None:
        await release.wait()
        ran.append("first")

    async def never() -> None:
        ran.append("second")

    assert checks.spawn("first", waits())
    second = never()
    with structlog.testing.capture_logs() as logs:
        assert not checks.spawn("second", second)
    assert second.cr_frame is None  # closed, so no "never awaited" warning either
    assert logs[0]["event"] == "background_check_dropped"
    release.set()
    await _settle(checks)
    assert ran == ["first"]


async def test_a_slow_check_is_cut_at_its_deadline() -> None:
    checks = BackgroundChecks(timeout_seconds=0.05)
    with structlog.testing.capture_logs() as logs:
        checks.spawn("slow", asyncio.sleep(10))
        await _settle(checks)
    assert checks.running == 0
    assert logs[0]["error_type"] == "TimeoutError"


async def test_close_waits_briefly_then_cancels() -> None:
    checks = BackgroundChecks()
    finished: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0.01)
        finished.append("quick")

    checks.spawn("quick", quick())
    checks.spawn("stuck", asyncio.sleep(10))
    await checks.aclose(grace_seconds=0.2)
    assert finished == ["quick"]
    assert checks.running == 0
    late = asyncio.sleep(0)
    assert not checks.spawn("late", late)


@pytest.mark.parametrize("limit", [1, 3])
async def test_running_counts_live_checks(limit: int) -> None:
    checks = BackgroundChecks(limit=limit)
    gate = asyncio.Event()
    for _ in range(limit):
        checks.spawn("held", gate.wait())
    assert checks.running == limit
    gate.set()
    await _settle(checks)
    assert checks.running == 0
