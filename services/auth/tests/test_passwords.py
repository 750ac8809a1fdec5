"""argon2id hashing: correct verification, equal work for unknown users, upgrades."""

from bulwark.auth.passwords import PasswordHasher


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
