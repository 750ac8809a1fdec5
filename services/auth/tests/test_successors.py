"""Sealed successors open only with the token they were sealed for, in their family."""

import uuid

import pytest

from bulwark.auth.sessions import successors
from bulwark.auth.tokens import new_refresh_token

pytestmark = pytest.mark.security(stride="ST", asvs=("V11", "V10.4"))


def test_seal_round_trip_and_refusals() -> None:
    token, _ = new_refresh_token()
    successor, _ = new_refresh_token()
    family = uuid.uuid4()
    sealed = successors.seal(token, successor, family)
    assert successor.encode() not in sealed
    assert successors.unseal(token, sealed, family) == successor
    other, _ = new_refresh_token()
    assert successors.unseal(other, sealed, family) is None
    assert successors.unseal(token, sealed, uuid.uuid4()) is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert successors.unseal(token, tampered, family) is None
