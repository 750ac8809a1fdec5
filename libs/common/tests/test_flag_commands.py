"""``<service> flags list|review``: ids, kinds and notes are data whatever they begin with.
The database is replaced by a recorder: what is checked here is what reaches the queries."""

import io
import uuid
from typing import Any

import pytest

from bulwark.common import flag_commands
from bulwark.common.command_line import CommandParser

pytestmark = pytest.mark.security(stride="T", asvs=("V1.2",))

USER = uuid.UUID("3f0c2a9e-5b1d-4c6e-9f7a-2d8b1e4c6a50")


class _Connection:
    async def close(self) -> None:
        return None


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """The calls of `list_flags` and `review_flag` (which find nothing), in order."""
    calls: list[tuple[str, dict[str, Any]]] = []

    async def connect(url: str, **options: object) -> _Connection:
        return _Connection()

    async def list_flags(conn: object, **filters: Any) -> list[object]:
        calls.append(("list", filters))
        return []

    async def review_flag(conn: object, flag_id: int, note: str | None) -> bool:
        calls.append(("review", {"flag_id": flag_id, "note": note}))
        return False

    monkeypatch.setattr(flag_commands.asyncpg, "connect", connect)
    monkeypatch.setattr(flag_commands, "list_flags", list_flags)
    monkeypatch.setattr(flag_commands, "review_flag", review_flag)
    return calls


def flags(*argv: str) -> int:
    """``service flags <argv>`` parsed as a service's command line does, then run."""
    parser = CommandParser(prog="service")
    flag_commands.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["flags", *argv])
    environ = {"DATABASE_URL": "postgresql://unused"}
    return flag_commands.run(args, program="service", environ=environ, out=io.StringIO())


def test_a_kind_may_begin_with_a_dash(queries: list[tuple[str, dict[str, Any]]]) -> None:
    assert flags("list", "--kind", "-burst", "--status", "open") == 0
    assert flags("list", "--kind", "--json") == 0  # the value of --kind, not the flag
    assert flags("list", "--kind", "-h", "--json") == 0
    assert [(name, filters["kind"]) for name, filters in queries] == [
        ("list", "-burst"),
        ("list", "--json"),
        ("list", "-h"),
    ]
    assert queries[0][1]["status"] == "open"


def test_a_user_id_is_read_as_the_value_of_user(
    queries: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert flags("list", "--user", str(USER), "--limit", "5") == 0
    assert queries == [("list", {"user_id": USER, "kind": None, "status": None, "limit": 5})]
    with pytest.raises(SystemExit):
        flags("list", "--user", "-x")  # reported as a bad id, not as a missing value
    assert "argument --user: invalid UUID value: '-x'" in capsys.readouterr().err


def test_a_review_note_may_begin_with_a_dash(queries: list[tuple[str, dict[str, Any]]]) -> None:
    assert flags("review", "42", "--note", "-a@example.com") == 1  # no such open flag
    assert flags("review", "--note", "-QA", "--", "8") == 1
    assert queries == [
        ("review", {"flag_id": 42, "note": "-a@example.com"}),
        ("review", {"flag_id": 8, "note": "-QA"}),
    ]
