"""Issue 11, manifests: every bad manifest is reported by :func:`manifests.validate.validate_manifest`, before
any model work, with the row, the column and the reason, or refused whole with a ``ManifestError`` naming
the file.

Covered elsewhere: ids equal up to case (tests/robustness/test_manifest_ids.py), allowed path prefixes
(tests/robustness/test_allowed_prefixes.py), a 100 000-row manifest (bench/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests.validate import ManifestError, validate_manifest


def _manifest(folder: Path, columns: dict[str, Any]) -> str:
    """``folder/m.parquet`` with ``columns`` (lists or pyarrow arrays); p.png and s.wav exist beside it."""
    (folder / "p.png").write_bytes(b"photo")
    (folder / "s.wav").write_bytes(b"speech")
    path = folder / "m.parquet"
    pq.write_table(pa.table(columns), path)
    return str(path)


def _row(**extra: list[Any]) -> dict[str, list[Any]]:
    return {"id": ["a"], "image": ["p.png"], "audio": ["s.wav"], **extra}


def _problems(report) -> list[tuple[int | None, str | None, str]]:
    return [(p.row, p.column, p.problem) for p in report.problems]


# ---- columns -----------------------------------------------------------------------------------------------


def test_missing_required_column_invalidates_every_row(tmp_path: Path) -> None:
    columns = _row()
    del columns["audio"]
    report = validate_manifest(_manifest(tmp_path, columns))
    assert _problems(report) == [(None, "audio", "required column is missing")]
    assert [bad.row for bad in report.invalid] == [0] and not report.rows


def test_unknown_column_invalidates_every_row(tmp_path: Path) -> None:
    """A typo (``pose`` for ``pose_style``) would otherwise silently render the default pose."""
    report = validate_manifest(_manifest(tmp_path, _row(pose=[3])))
    assert _problems(report) == [(None, "pose", "unknown column")]
    assert report.invalid[0].error == "invalid manifest row: pose: unknown column" and not report.rows


# ---- cell types and ranges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        pytest.param("id", pa.array([7]), "Input should be a valid string (got 7)", id="id-int"),
        pytest.param("image", pa.array([3.5]), "Input should be a valid string (got 3.5)", id="image-float"),
        pytest.param("expression_scale", pa.array(["loud"]), "a valid number", id="expression_scale-str"),
        pytest.param(
            "pose_style", pa.array([7.5]), "with a fractional part (got 7.5)", id="pose_style-float"
        ),
        pytest.param("still", pa.array(["maybe"]), "Input should be a valid boolean", id="still-str"),
        pytest.param("size", pa.array(["256"]), "Input should be 256 or 512 (got '256')", id="size-str"),
        pytest.param("input_yaw", pa.array([10.0]), "a valid list (got 10.0)", id="input_yaw-scalar"),
        pytest.param(
            "expression_scale", pa.array([float("inf")]), "a finite number", id="expression_scale-inf"
        ),
        pytest.param(
            "pose_style",
            pa.array([True]),
            "Input should be a valid integer",
            id="pose_style-bool",
        ),
    ],
)
def test_wrong_type_is_a_row_problem_naming_the_column(tmp_path: Path, column: str, value, problem) -> None:
    report = validate_manifest(_manifest(tmp_path, {**_row(), column: value}))
    assert [(p.row, p.column) for p in report.problems] == [(0, column)]
    assert problem in report.problems[0].problem and not report.rows


def test_pose_style_46_is_out_of_range(tmp_path: Path) -> None:
    report = validate_manifest(_manifest(tmp_path, _row(pose_style=[46])))
    assert _problems(report) == [(0, "pose_style", "Input should be less than or equal to 45 (got 46)")]


# ---- ids that would leave items/<id>/ ----------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["a/b", "..", "../x", "x/../y", ".hidden", "a\\b", "/abs", ""])
def test_id_with_a_slash_or_dots_is_refused(tmp_path: Path, bad_id: str) -> None:
    columns = {"id": [bad_id, "ok"], "image": ["p.png"] * 2, "audio": ["s.wav"] * 2}
    report = validate_manifest(_manifest(tmp_path, columns))
    assert [(p.row, p.column) for p in report.problems] == [(0, "id")]
    assert "String should match pattern" in report.problems[0].problem
    assert [row.id for row in report.rows] == ["ok"]


def test_dots_inside_an_id_stay_one_folder_name(tmp_path: Path) -> None:
    """``a..b`` is a plain name (no separator): allowed, and its folder stays inside the batch."""
    from sadtalker.paths import check_id

    report = validate_manifest(_manifest(tmp_path, {**_row(), "id": ["a..b"]}))
    assert report.ok and check_id(report.rows[0].id) == "a..b"


# ---- empty, or not a manifest ------------------------------------------------------------------------------


def test_empty_manifest_is_valid_with_zero_rows(tmp_path: Path) -> None:
    """Columns but no rows: nothing to do, which is what a batch over it reports (0/0 rows, exit 0)."""
    empty = {name: pa.array([], pa.string()) for name in ("id", "image", "audio")}
    report = validate_manifest(_manifest(tmp_path, empty))
    assert report.ok and report.num_rows == 0 and report.rows == () and report.invalid == ()


def test_manifest_without_columns_names_the_required_ones(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({}), path)
    report = validate_manifest(str(path))
    assert _problems(report) == [
        (None, name, "required column is missing") for name in ("id", "image", "audio")
    ]


@pytest.mark.parametrize(
    "content",
    [b"id,image,audio\na,p.png,s.wav\n", b"", b"PAR1" + bytes(100)],
    ids=["csv-named-parquet", "zero-bytes", "corrupt-parquet"],
)
def test_not_parquet_is_a_manifest_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.parquet"
    path.write_bytes(content)
    with pytest.raises(ManifestError, match="not a readable Parquet file") as err:
        validate_manifest(str(path))
    assert err.value.path.endswith("m.parquet")
