"""The account-deletion consumer's retry schedule: doubles from 0.5 s, never past 30 s."""

from bulwark.api.account_deletions.consumer import MAX_BACKOFF_SECONDS, backoff_seconds


def test_the_backoff_doubles_with_jitter_and_is_bounded() -> None:
    for failures, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (10_000, 30.0)):
        for _ in range(50):
            assert 0.8 * ceiling <= backoff_seconds(failures) <= ceiling
    assert MAX_BACKOFF_SECONDS == 30.0
