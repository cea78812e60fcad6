"""Finding 11: row ids name output folders (items/<id>/), so ids equal up to case collide on case-insensitive
storage (macOS, Windows, some S3 gateways): they are rejected at validation, naming both rows."""

from __future__ import annotations

from manifests.validate import validate_records


def _rows(*ids: str) -> list[dict[str, str]]:
    return [{"id": i, "image": f"{n}.png", "audio": f"{n}.wav"} for n, i in enumerate(ids)]


def _errors(report) -> dict[int, str]:
    return {bad.row: bad.error for bad in report.invalid}


def test_ids_differing_only_in_case_are_rejected_naming_both_rows() -> None:
    report = validate_records(_rows("Alice", "bob", "alice"), check_files=False)
    errors = _errors(report)
    assert sorted(errors) == [0, 2] and [row.id for row in report.rows] == ["bob"]
    assert "'alice' (row 2)" in errors[0] and "case" in errors[0]
    assert "'Alice' (row 0)" in errors[2] and "case" in errors[2]
    assert not report.ok


def test_three_spellings_and_an_exact_duplicate() -> None:
    report = validate_records(_rows("a-1", "A-1", "a-1", "x"), check_files=False)
    errors = _errors(report)
    assert sorted(errors) == [0, 1, 2]
    assert "duplicate id (also in row 2)" in errors[0] and "'A-1' (row 1)" in errors[0]
    assert "'a-1' (rows 0, 2)" in errors[1]
    problems = [p for p in report.problems if p.column == "id"]
    assert {p.row for p in problems} == {0, 1, 2}


def test_distinct_ids_stay_valid() -> None:
    report = validate_records(_rows("alice", "alice-2", "Alice_", "ALICE.v2"), check_files=False)
    assert report.ok and len(report.rows) == 4
