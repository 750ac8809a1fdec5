"""Migration files are numbered and unique."""

from pathlib import Path

import pytest

from bulwark.common.migrations import migration_files


def test_files_are_ordered_by_version(tmp_path: Path) -> None:
    for name in ("002_more.sql", "001_init.sql", "010_late.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    assert [version for version, _ in migration_files(tmp_path)] == [1, 2, 10]


@pytest.mark.parametrize("names", [["1_init.sql"], ["001_a.sql", "001_b.sql"], ["001 x.sql"]])
def test_misnamed_or_duplicate_files_are_refused(tmp_path: Path, names: list[str]) -> None:
    for name in names:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(ValueError, match="migration"):
        migration_files(tmp_path)
