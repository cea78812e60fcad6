"""Manifests: the row model, every-problem-at-once validation, building from CSV / JSON / folder, and
the output-path checks (sadtalker.paths)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from flows.cli import main as cli_main
from manifests import EXAMPLE_ALLOWED_PREFIXES, EXAMPLE_MANIFEST
from manifests.build import ManifestBuildError, build_manifest, parse_cell, write_manifest
from manifests.schema import ManifestRow
from manifests.validate import ManifestError, validate_manifest, validate_records
from sadtalker.options import RenderOptions
from sadtalker.paths import BatchPaths, PathEscapeError, batch_id_for, check_id, ensure_within


def _files(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(name.encode())


# --- the row model --------------------------------------------------------------------------------------


def test_row_defaults_mirror_render_options() -> None:
    row = ManifestRow(id="a", image="x.png", audio="y.wav")
    assert row.to_options() == RenderOptions()
    opts = ManifestRow(id="b", image="x", audio="y", size=512, input_yaw=[10, -20], still=True).to_options(
        device="cuda", dtype="float16"
    )
    assert (opts.size, opts.input_yaw, opts.still, opts.device, opts.dtype) == (
        512,
        (10.0, -20.0),
        True,
        "cuda",
        "float16",
    )
    assert all(f.description for f in ManifestRow.model_fields.values())


@pytest.mark.parametrize(
    ("values", "column"),
    [
        ({"id": "../escape"}, "id"),
        ({"id": ".hidden"}, "id"),
        ({"id": "a/b"}, "id"),
        ({"id": ""}, "id"),
        ({"size": 300}, "size"),
        ({"preprocess": "zoom"}, "preprocess"),
        ({"pose_style": 46}, "pose_style"),
        ({"pose_style": -1}, "pose_style"),
        ({"expression_scale": -0.5}, "expression_scale"),
        ({"expression_scale": float("inf")}, "expression_scale"),
        ({"input_yaw": [0, 120]}, "input_yaw"),
        ({"input_roll": []}, "input_roll"),
        ({"seed": -1}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_row_rejects_bad_values(values: dict, column: str) -> None:
    with pytest.raises(ValidationError) as info:
        ManifestRow(**{"id": "ok", "image": "x.png", "audio": "y.wav", **values})
    assert [e["loc"][0] for e in info.value.errors()] == [column]


# --- validation -----------------------------------------------------------------------------------------


def test_validation_reports_every_problem_of_every_row(tmp_path: Path) -> None:
    _files(tmp_path / "media", "a.png", "a.wav")
    rows = [
        {"id": "good", "image": "media/a.png", "audio": "media/a.wav", "pose_style": 3},
        {"id": "bad", "image": "media/a.png", "audio": "media/a.wav", "size": 300, "pose_style": 99},
        {"id": "dup", "image": "media/missing.png", "audio": "media/a.wav"},
        {"id": "dup", "image": "media/a.png", "audio": "media/gone.wav", "input_yaw": [0.0, 95.0]},
        {"id": "../x", "image": "media/a.png", "audio": "media/a.wav"},
        {"id": "also-good", "image": str(tmp_path / "media/a.png"), "audio": "media/a.wav", "still": True},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "m.parquet")  # missing cells: None / NaN
    report = validate_manifest(str(tmp_path / "m.parquet"))
    found = {(p.row, p.column) for p in report.problems}
    assert found == {
        (1, "size"),
        (1, "pose_style"),
        (2, "id"),
        (2, "image"),
        (3, "id"),
        (3, "audio"),
        (3, "input_yaw"),
        (4, "id"),
    }
    assert [r.id for r in report.rows] == ["good", "also-good"]
    assert report.row_numbers == {"good": 0, "also-good": 5}
    assert [bad.row for bad in report.invalid] == [1, 2, 3, 4]
    assert report.rows[0].image == str(tmp_path / "media" / "a.png")  # resolved against the manifest folder
    assert "duplicate id (also in row 3)" in report.invalid[1].error
    assert "file not found" in report.invalid[1].error
    assert len(report.manifest_sha256) == 64 and not report.ok
    table = report.format_problems()
    assert table.splitlines()[0].split() == ["row", "id", "column", "problem"] and "pose_style" in table


def test_unknown_or_missing_columns_invalidate_every_row(tmp_path: Path) -> None:
    rows = [{"id": "a", "image": "x", "audio": "y", "pose_stlye": 3}, {"id": "b", "image": "x", "audio": "y"}]
    report = validate_records(rows, check_files=False)
    assert [(p.row, p.column, p.problem) for p in report.problems] == [(None, "pose_stlye", "unknown column")]
    assert not report.rows and len(report.invalid) == 2
    report = validate_records([{"id": "a", "image": "x"}], check_files=False)
    assert [(p.row, p.column) for p in report.problems] == [(None, "audio")]


def test_missing_cells_take_defaults_and_pandas_index_is_ignored(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"id": ["a", "b"], "image": ["x.png", "x.png"], "audio": ["y.wav", "y.wav"], "pose_style": [None, 7]},
        index=["r1", "r2"],
    )
    frame.to_parquet(tmp_path / "m.parquet")  # pose_style becomes float64 with NaN; a named index column
    report = validate_manifest(str(tmp_path / "m.parquet"), check_files=False)
    assert report.ok, report.format_problems()
    assert [r.pose_style for r in report.rows] == [0, 7]


def test_unreadable_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        validate_manifest(str(tmp_path / "none.parquet"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ManifestError, match="Parquet"):
        validate_manifest(str(tmp_path / "bad.parquet"))
    assert cli_main(["validate", str(tmp_path / "none.parquet")]) == 2


def test_bundled_example_manifest_is_valid_and_matches_its_csv(tmp_path: Path) -> None:
    # its portrait is in tests/data, outside the example's folder: allowed explicitly
    report = validate_manifest(str(EXAMPLE_MANIFEST), allowed_prefixes=EXAMPLE_ALLOWED_PREFIXES)
    assert report.ok, report.format_problems()
    assert [r.id for r in report.rows] == ["hello", "hello-still"]
    rebuilt = build_manifest(str(EXAMPLE_MANIFEST.with_suffix(".csv")), str(tmp_path / "m.parquet"))
    assert [r.model_dump() for r in rebuilt.rows] == [r.model_dump() for r in report.rows]


# --- building -------------------------------------------------------------------------------------------


def test_parse_cell() -> None:
    assert parse_cell("size", "512") == 512 and parse_cell("still", "Yes") is True
    assert parse_cell("input_yaw", "[-20, 30]") == [-20.0, 30.0] == parse_cell("input_yaw", "-20;30")
    assert parse_cell("expression_scale", " 1.5 ") == 1.5 and parse_cell("seed", "") is None
    assert parse_cell("pose_style", "three") == "three"  # left for validation to report


def test_build_from_csv_rebases_paths_and_types_columns(tmp_path: Path) -> None:
    _files(tmp_path / "src" / "media", "p.png", "s.wav")
    (tmp_path / "src" / "rows.csv").write_text(
        "id,image,audio,size,still,input_yaw,expression_scale\n"
        "one,media/p.png,media/s.wav,512,true,-20;30,1.5\n"
        "two,media/p.png,media/s.wav,,,,\n"
    )
    out = tmp_path / "manifests" / "m.parquet"
    report = build_manifest(str(tmp_path / "src" / "rows.csv"), str(out), defaults={"pose_style": 4})
    table = pq.read_table(out)
    assert table.schema.field("size").type == pa.int64() and table.schema.field("input_yaw").type == pa.list_(
        pa.float64()
    )
    assert table.column("image").to_pylist() == ["../src/media/p.png"] * 2
    assert [(r.size, r.still, r.input_yaw, r.pose_style) for r in report.rows] == [
        (512, True, [-20.0, 30.0], 4),
        (256, False, None, 4),
    ]
    assert validate_manifest(str(out), allowed_prefixes=[str(tmp_path)]).ok  # media beside, not below it


def test_build_from_json_and_refuse_invalid(tmp_path: Path) -> None:
    _files(tmp_path, "p.png", "s.wav")
    (tmp_path / "rows.json").write_text(
        json.dumps([{"id": "j", "image": "p.png", "audio": "s.wav", "seed": 5}])
    )
    report = build_manifest(str(tmp_path / "rows.json"), str(tmp_path / "out.parquet"))
    assert report.rows[0].seed == 5
    (tmp_path / "bad.json").write_text(
        json.dumps([{"id": "j", "image": "p.png", "audio": "nope.wav", "size": 7}])
    )
    with pytest.raises(ManifestBuildError) as info:
        build_manifest(str(tmp_path / "bad.json"), str(tmp_path / "bad.parquet"))
    assert {(p.row, p.column) for p in info.value.report.problems} == {(0, "size"), (0, "audio")}
    assert not (tmp_path / "bad.parquet").exists()


def test_build_from_folder_of_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _files(
        tmp_path / "pairs", "alice.png", "alice.wav", "bob smith.jpg", "bob smith.mp3", "lonely.png", "x.txt"
    )
    code = cli_main(
        ["build-manifest", str(tmp_path / "pairs"), "-o", str(tmp_path / "m.parquet"), "--set", "size=512"]
    )
    assert code == 0
    report = validate_manifest(str(tmp_path / "m.parquet"))
    assert [(r.id, Path(r.image).name, Path(r.audio).name, r.size) for r in report.rows] == [
        ("alice", "alice.png", "alice.wav", 512),
        ("bob-smith", "bob smith.jpg", "bob smith.mp3", 512),
    ]
    assert "lonely.png" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "build-manifest",
                str(tmp_path / "pairs"),
                "-o",
                str(tmp_path / "n.parquet"),
                "--set",
                "pose_style=99",
            ]
        )
        == 1
    )


def test_write_manifest_keeps_only_given_columns(tmp_path: Path) -> None:
    _files(tmp_path, "p.png", "s.wav")
    write_manifest([{"id": "a", "image": "p.png", "audio": "s.wav"}], str(tmp_path / "m.parquet"))
    assert pq.read_table(tmp_path / "m.parquet").column_names == ["id", "image", "audio"]


# --- output paths ---------------------------------------------------------------------------------------


def test_output_layout_and_escape_checks(tmp_path: Path) -> None:
    paths = BatchPaths.create(str(tmp_path / "out"), "nightly-1")
    item = paths.item("row.1")
    root = tmp_path / "out" / "nightly-1"
    assert paths.results == str(root / "results.parquet") and paths.qc == str(root / "qc.parquet")
    assert item.video == str(root / "items" / "row.1" / "video.mp4") and item.qc.endswith("row.1/qc.json")
    assert paths.face_cache("ab" * 32) == str(tmp_path / "out" / "cache" / "face" / f"{'ab' * 32}.npz")
    s3 = BatchPaths.create("s3://bkt/out", "b", cache="s3://bkt/cache")
    assert s3.item("a").coeffs == "s3://bkt/out/b/items/a/coeffs.npz"
    assert s3.coeffs_cache("0" * 64) == f"s3://bkt/cache/coeffs/{'0' * 64}.npz"
    for bad in ("..", "../x", "a/b", ".hidden", "", "x" * 129, "a\\b"):
        with pytest.raises(PathEscapeError):
            paths.item(bad)
    for bad_batch in ("..", "cache", "a/b"):
        with pytest.raises(PathEscapeError):
            BatchPaths.create(str(tmp_path), bad_batch)
    with pytest.raises(PathEscapeError):
        paths.face_cache("../../etc/passwd")
    with pytest.raises(PathEscapeError):
        ensure_within(str(tmp_path / "out"), str(tmp_path / "out" / ".." / "elsewhere"))
    with pytest.raises(PathEscapeError):
        ensure_within("s3://bkt/out", "s3://bkt/outside/x")
    assert check_id("Row_1.a-b") == "Row_1.a-b"
    assert batch_id_for("s3://b/nightly 2026.parquet", "f" * 64) == "nightly-2026-ffffffffffff"
