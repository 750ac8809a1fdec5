"""argon2id hashing: correct verification, equal work for unknown users, upgrades."""

import threading
from typing import Literal

import argon2
import pytest

from bulwark.auth.passwords import PasswordHasher

pytestmark = pytest.mark.security(stride="SI", asvs=("V11.4", "V6.3"))


async def test_hash_verify_and_dummy_path() -> None:
    hasher = PasswordHasher(memory_kib=19456, time_cost=2, parallelism=1)
    try:
        encoded = await hasher.hash("Correct-Horse-9!")
        assert encoded.startswith("$argon2id$")
        assert await hasher.verify(encoded, "Correct-Horse-9!")
        assert not await hasher.verify(encoded, "wrong")
        assert not await hasher.verify(None, "Correct-Horse-9!")
        assert not hasher.needs_rehash(encoded)
    finally:
        hasher.close()


async def test_weaker_hashes_are_flagged_for_upgrade() -> None:
    weak = PasswordHasher(memory_kib=19456, time_cost=2, parallelism=1)
    strong = PasswordHasher(memory_kib=32768, time_cost=3, parallelism=1)
    try:
        assert strong.needs_rehash(await weak.hash("Correct-Horse-9!"))
    finally:
        weak.close()
        strong.close()


async def test_argon2_runs_off_the_event_loop_for_known_and_unknown_users() -> None:
    threads: list[str] = []

    class RecordingArgon2(argon2.PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            threads.append(threading.current_thread().name)
            return super().verify(hash, password)

    hasher = PasswordHasher(memory_kib=19456, time_cost=2, parallelism=1)
    hasher._hasher = RecordingArgon2(memory_cost=19456, time_cost=2, parallelism=1)
    try:
        encoded = await hasher.hash("Correct-Horse-9!")
        await hasher.verify(encoded, "Correct-Horse-9!")
        await hasher.verify(None, "Correct-Horse-9!")  # unknown user: the dummy hash
    finally:
        hasher.close()
    # Both paths did the argon2 work, and neither on the event loop's thread.
    assert len(threads) == 2
    assert all(name.startswith("argon2") for name in threads)
    assert threading.main_thread().name not in threads
