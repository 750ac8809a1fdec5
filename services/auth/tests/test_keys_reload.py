"""A running service picks up KEYS_DIR changes; a broken change keeps the previous keys."""

import asyncio
from pathlib import Path

import pytest
import structlog

from bulwark.auth.keys import KeyFolder, generate_key, write_key
from bulwark.auth.keys.files import read_keys
from bulwark.auth.keys.lifecycle import KeyTiming, apply_change, plan_revoke, plan_rotate

pytestmark = pytest.mark.security(stride="SD", asvs=("V11",))

TIMING = KeyTiming(jwks_max_age=1, access_token_ttl=60)


def test_a_rotation_is_picked_up(tmp_path: Path) -> None:
    write_key(tmp_path, generate_key("test", state="active"))
    write_key(tmp_path, generate_key("test", state="next"))
    folder = KeyFolder(tmp_path, "test", generate=False)
    before = folder.keys.active_kid
    assert not folder.check()  # nothing changed
    apply_change(tmp_path, plan_rotate(read_keys(tmp_path), TIMING, now=0, force=True))
    assert folder.check()
    assert folder.keys.active_kid != before
    assert before in folder.keys.kids  # retiring: still published
    assert len(folder.keys.jwks()["keys"]) == 3


def test_a_revoked_key_leaves_the_jwks(tmp_path: Path) -> None:
    folder = KeyFolder(tmp_path, "test", generate=True)
    revoked = folder.keys.active_kid
    apply_change(tmp_path, plan_revoke(read_keys(tmp_path), revoked, now=0))
    assert folder.check()
    assert folder.keys.public_key(revoked) is None
    assert revoked not in {key["kid"] for key in folder.keys.jwks()["keys"]}


def test_a_broken_change_keeps_the_old_keys_and_logs_an_error(tmp_path: Path) -> None:
    folder = KeyFolder(tmp_path, "production", generate=True)
    kid = folder.keys.active_kid
    write_key(tmp_path, generate_key("staging", state="next"))  # another environment
    with structlog.testing.capture_logs() as logs:
        assert not folder.check()
    assert folder.keys.active_kid == kid
    assert logs[0]["event"] == "signing_keys_reload_failed"
    assert logs[0]["log_level"] == "error"
    assert "another environment" in logs[0]["error"]
    assert not folder.check()  # logged once per change, not once per poll

    for path in tmp_path.glob("*.json"):
        if path.stem != kid:
            path.unlink()
    (tmp_path / "garbage.json").write_text("{not json")
    assert not folder.check()
    assert folder.keys.active_kid == kid
    (tmp_path / "garbage.json").unlink()
    write_key(tmp_path, generate_key("production", state="next"))
    assert folder.check()
    assert len(folder.keys.kids) == 2


@pytest.mark.asyncio
async def test_the_watcher_polls_until_cancelled(tmp_path: Path) -> None:
    folder = KeyFolder(tmp_path, "test", generate=True)
    before = folder.keys.active_kid
    task = asyncio.create_task(folder.watch(interval=0.01))
    apply_change(tmp_path, plan_revoke(read_keys(tmp_path), before, now=0))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if folder.keys.active_kid != before:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert folder.keys.active_kid != before
