"""Issue 11, finding 8: a manifest can only name files under the allowed input prefixes.

Default: the manifest's own folder tree. ``..`` segments and symlinks are resolved before comparing, fsspec
URLs are compared normalised (``s3://bucket/media/`` does not allow ``s3://bucket/media-old/``), reference
files obey the same rule, and ``*`` (``--allow-any-path``) is the explicit one-machine opt-out. A row
outside is invalid at validation with the reason; its file is never opened or probed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flows  # noqa: F401  (offline Prefect settings first)
from flows.cli import main as cli_main
from flows.render_batch import render_batch
from manifests.validate import validate_manifest, validate_records

OUTSIDE = "outside the allowed input prefixes"


def _batch(tmp_path: Path, **row: str) -> tuple[str, Path]:
    """``tmp_path/batch/m.parquet`` with one row (``ok``) over ``p.png`` / ``s.wav`` beside it, columns
    overridden by ``row``; also a file outside the tree, ``tmp_path/elsewhere/x.png``."""
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "p.png").write_bytes(b"photo")
    (batch / "s.wav").write_bytes(b"speech FRAMES=3")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.png").write_bytes(b"private photo")
    record = {"id": "ok", "image": "p.png", "audio": "s.wav", **row}
    manifest = batch / "m.parquet"
    pq.write_table(pa.Table.from_pylist([record]), manifest)
    return str(manifest), batch


def _problems(report: Any) -> dict[str, str]:
    return {str(p.column): p.problem for p in report.problems}


def test_dotdot_escape_is_invalid(tmp_path: Path) -> None:
    manifest, _ = _batch(tmp_path, image="../../../../../../../../etc/passwd")
    report = validate_manifest(manifest)
    assert not report.rows and [bad.row for bad in report.invalid] == [0]
    problem = _problems(report)["image"]
    assert OUTSIDE in problem and "/etc/passwd" in problem and "--allow-prefix" in problem
    assert OUTSIDE in report.invalid[0].error


def test_absolute_path_outside_is_invalid(tmp_path: Path) -> None:
    manifest, _ = _batch(tmp_path, image=str(tmp_path / "elsewhere" / "x.png"))
    report = validate_manifest(manifest)
    assert not report.rows and OUTSIDE in _problems(report)["image"]
    # a sibling folder whose name merely starts like the manifest's is outside too
    (tmp_path / "batch-old").mkdir()
    (tmp_path / "batch-old" / "s.wav").write_bytes(b"speech")
    report = validate_records(
        [{"id": "a", "image": "p.png", "audio": "../batch-old/s.wav"}], base=str(tmp_path / "batch")
    )
    assert OUTSIDE in _problems(report)["audio"]


def test_symlink_escaping_the_tree_is_invalid(tmp_path: Path) -> None:
    manifest, batch = _batch(tmp_path, image="link.png", audio="media/s.wav")
    (batch / "link.png").symlink_to(tmp_path / "elsewhere" / "x.png")  # a file link out of the tree
    (tmp_path / "elsewhere" / "s.wav").write_bytes(b"speech")
    (batch / "media").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a folder link
    report = validate_manifest(manifest)
    problems = _problems(report)
    assert not report.rows and set(problems) == {"image", "audio"}
    assert (
        OUTSIDE in problems["image"]
        and os.path.realpath(tmp_path / "elsewhere" / "x.png") in problems["image"]
    )
    assert OUTSIDE in problems["audio"]
    # a link that stays inside the tree is fine
    (batch / "inner.png").symlink_to(batch / "p.png")
    assert validate_records(
        [{"id": "a", "image": "inner.png", "audio": "s.wav"}], base=str(batch), allowed_prefixes=None
    ).ok


def test_s3_uri_outside_the_allowed_bucket_prefix_is_invalid() -> None:
    rows = [
        {"id": "in", "image": "s3://bkt/media/a.png", "audio": "../media/a.wav"},
        {"id": "dotdot", "image": "s3://bkt/media/../private/a.png", "audio": "s3://bkt/media/a.wav"},
        {"id": "lookalike", "image": "s3://bkt/media-old/a.png", "audio": "s3://bkt/media/a.wav"},
        {"id": "bucket", "image": "s3://other/media/a.png", "audio": "s3://bkt/media/a.wav"},
        {"id": "local", "image": "/etc/passwd", "audio": "s3://bkt/media/a.wav"},
    ]
    report = validate_records(
        rows, base="s3://bkt/batches", allowed_prefixes=["s3://bkt/media/"], check_files=False
    )
    assert [r.id for r in report.rows] == ["in"] and report.rows[0].audio == "s3://bkt/media/a.wav"
    assert {p.id: p.column for p in report.problems} == {
        "dotdot": "image",
        "lookalike": "image",
        "bucket": "image",
        "local": "image",
    }
    assert all(OUTSIDE in p.problem for p in report.problems)
    dotdot = validate_records(
        rows[1:2], base="s3://b/m", allowed_prefixes=["s3://bkt/media"], check_files=False
    )
    assert "resolves to s3://bkt/private/a.png" in _problems(dotdot)["image"]
    # default for a manifest on S3: its own folder tree
    report = validate_records(rows[:1], base="s3://bkt/batches", check_files=False)
    assert not report.rows and set(_problems(report)) == {"image", "audio"}


def test_reference_files_obey_the_same_rule(tmp_path: Path) -> None:
    manifest, _ = _batch(
        tmp_path, ref_pose="../elsewhere/pose.npz", ref_eyeblink="../../../../../../../../etc/hosts"
    )
    (tmp_path / "elsewhere" / "pose.npz").write_bytes(b"npz")
    report = validate_manifest(manifest)
    problems = _problems(report)
    assert set(problems) == {"ref_eyeblink", "ref_pose"} and all(OUTSIDE in p for p in problems.values())


def test_paths_inside_the_allowed_prefixes_are_valid(tmp_path: Path) -> None:
    manifest, batch = _batch(tmp_path, image="../elsewhere/x.png")
    report = validate_manifest(manifest, allowed_prefixes=[str(batch), str(tmp_path / "elsewhere") + "/"])
    assert report.ok, report.format_problems()
    assert report.rows[0].image == str(tmp_path / "elsewhere" / "x.png")
    assert report.allowed_prefixes == (os.path.realpath(batch), os.path.realpath(tmp_path / "elsewhere"))
    # the default allows the manifest's own tree, sub-folders included
    (batch / "sub").mkdir()
    (batch / "sub" / "q.png").write_bytes(b"photo")
    assert validate_records(
        [{"id": "a", "image": "sub/q.png", "audio": "./s.wav"}], base=str(batch), allowed_prefixes=None
    ).ok
    # an explicit list replaces the default: the manifest's folder is no longer allowed by itself
    report = validate_manifest(manifest, allowed_prefixes=[str(tmp_path / "elsewhere")])
    assert set(_problems(report)) == {"audio"}


def test_opt_out_allows_any_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, _ = _batch(tmp_path, image="../../../../../../../../etc/passwd")
    assert validate_manifest(manifest, allowed_prefixes=["*"]).ok
    assert cli_main(["validate", manifest]) == 1
    assert OUTSIDE in capsys.readouterr().out
    assert cli_main(["validate", manifest, "--allow-any-path"]) == 0
    assert (
        cli_main(
            ["validate", manifest, "--allow-prefix", "/etc", "--allow-prefix", os.path.dirname(manifest)]
        )
        == 0
    )
    assert cli_main(["validate", manifest, "--allow-prefix", "/etc", "--allow-any-path"]) == 2  # one or other


def test_submit_takes_the_same_options(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    monkeypatch.setattr("flows.submit.submit", lambda *a, **kw: sent.append(kw["allowed_prefixes"]) or 0)
    assert cli_main(["submit", "m.parquet", "-o", "out", "--allow-prefix", "s3://b/media"]) == 0
    assert sent.pop() == ["s3://b/media"]
    assert cli_main(["submit", "m.parquet", "-o", "out", "--allow-any-path"]) == 0
    assert sent.pop() == ["*"]


def test_the_batch_never_opens_a_file_outside(tmp_path: Path, fake_pipeline: Any) -> None:
    manifest, batch = _batch(tmp_path, image="../elsewhere/x.png")
    summary = render_batch(manifest=manifest, output=str(tmp_path / "out"), device="cpu")
    row = pd.read_parquet(summary.results_uri).set_index("id").loc["ok"]
    assert (row["status"], row["failed_stage"]) == ("failed", "validate") and OUTSIDE in row["error"]
    assert fake_pipeline.calls("extract_face") == []
    # the flow parameter allows it explicitly (as a deployment sets it)
    summary = render_batch(
        manifest=manifest,
        output=str(tmp_path / "out"),
        device="cpu",
        allowed_prefixes=[str(batch), str(tmp_path / "elsewhere")],
    )
    assert summary.ok and fake_pipeline.calls("extract_face") == ["x.png"]
    # and the CLI's --allow-any-path opt-out
    assert (
        cli_main(["run", manifest, "-o", str(tmp_path / "out2"), "--device", "cpu", "--allow-any-path"]) == 0
    )


# ---- issue 11: a file swapped for a symlink out of the prefixes after validation (time of check / use) ----

CHANGED = f"{OUTSIDE} (changed after validation?)"
SECRET = b"private bytes FRAMES=3"


def _swap_for_link(path: Path, target: Path) -> None:
    """What an attacker does between validation and the worker: the checked file becomes a symlink out."""
    path.unlink()
    path.symlink_to(target)


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_checked_input_inside_is_read_from_a_private_copy(tmp_path: Path) -> None:
    from sadtalker.inputs import localize_input

    _, batch = _batch(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    local = localize_input(str(batch / "p.png"), scratch, (str(batch),))
    assert local.name == "p.png" and local.parent.parent == scratch and local.read_bytes() == b"photo"
    # a swap after the check cannot reach what the stage reads
    _swap_for_link(batch / "p.png", tmp_path / "elsewhere" / "x.png")
    assert local.read_bytes() == b"photo"
    # a symlink that stays inside the prefixes is fine (a link into the tree from the tree)
    (batch / "inner.wav").symlink_to(batch / "s.wav")
    assert localize_input(str(batch / "inner.wav"), scratch, (str(batch),)).read_bytes() == b"speech FRAMES=3"


def test_checked_input_symlinked_outside_is_refused_unread(tmp_path: Path) -> None:
    from sadtalker.errors import OutsidePrefixesError
    from sadtalker.inputs import localize_input

    _, batch = _batch(tmp_path)
    _swap_for_link(batch / "p.png", tmp_path / "elsewhere" / "x.png")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(OutsidePrefixesError) as caught:
        localize_input(str(batch / "p.png"), scratch, (str(batch),))
    message = str(caught.value)
    assert message.startswith(f"{batch / 'p.png'}: {CHANGED}")
    assert os.path.realpath(tmp_path / "elsewhere" / "x.png") in message
    assert not list(scratch.rglob("*"))  # nothing of it was copied


def test_any_path_or_no_prefixes_allow_anything(tmp_path: Path) -> None:
    from sadtalker.inputs import localize_input

    _, batch = _batch(tmp_path)
    _swap_for_link(batch / "p.png", tmp_path / "elsewhere" / "x.png")
    for prefixes in (("*",), (), None):
        local = localize_input(str(batch / "p.png"), tmp_path, prefixes)
        assert local == batch / "p.png" and local.read_bytes() == b"private photo"  # as before: no copy


@pytest.mark.parametrize("proc", [True, False], ids=["proc-fd", "no-proc"])
def test_a_swap_between_the_look_and_the_open_is_caught_on_the_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: bool
) -> None:
    """The path still resolves inside when it is looked at; the attacker swaps it just before ``open``:
    the descriptor's real path (``/proc/self/fd``; without ``/proc``: the resolved path, same inode) is
    outside, so the file is refused before a byte of it is read."""
    from sadtalker import inputs
    from sadtalker.errors import OutsidePrefixesError

    _, batch = _batch(tmp_path)
    real_open, real_readlink = os.open, os.readlink

    def swapping_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path) == str(batch / "p.png"):
            _swap_for_link(batch / "p.png", tmp_path / "elsewhere" / "x.png")
        return real_open(path, flags, *args, **kwargs)

    def no_proc(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith("/proc/self/fd/"):
            raise FileNotFoundError(path)
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(inputs.os, "open", swapping_open)
    if not proc:
        monkeypatch.setattr(inputs.os, "readlink", no_proc)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(OutsidePrefixesError, match=r"changed after validation\?"):
        inputs.localize_input(str(batch / "p.png"), scratch, (str(batch),))
    assert (batch / "p.png").is_symlink() and not list(scratch.rglob("*"))


def test_a_fifo_input_is_refused_without_blocking(tmp_path: Path) -> None:
    from sadtalker.errors import InputError
    from sadtalker.inputs import localize_input

    _, batch = _batch(tmp_path)
    os.mkfifo(batch / "pipe.wav")
    with pytest.raises(InputError, match="not a regular file"):
        localize_input(str(batch / "pipe.wav"), tmp_path, (str(batch),))


@pytest.mark.parametrize(
    ("column", "stage"), [("image", "face"), ("audio", "coeffs"), ("image", "render"), ("audio", "qc")]
)
def test_an_input_swapped_after_validation_fails_its_stage(
    tmp_path: Path, fake_pipeline: Any, column: str, stage: str
) -> None:
    """A row valid at validation whose photo (or speech) then becomes a symlink to a file outside the
    prefixes: the first stage that opens it fails with the clear error; the outside bytes reach no
    pipeline call and no output."""
    from sadtalker.errors import OutsidePrefixesError
    from sadtalker.paths import BatchPaths
    from tasks.coeffs import coefficients_task
    from tasks.face import extract_face_task
    from tasks.qc import qc_task
    from tasks.records import StageContext
    from tasks.render import render_task

    manifest, batch = _batch(tmp_path)
    (tmp_path / "elsewhere" / "secret").write_bytes(SECRET)
    report = validate_manifest(manifest)
    assert report.ok and report.allowed_prefixes == (os.path.realpath(batch),)
    row = report.rows[0]
    ctx = StageContext(
        paths=BatchPaths.create(str(tmp_path / "out"), "b1"),
        device="cpu",
        allowed_prefixes=report.allowed_prefixes,
    )
    name = {"image": "p.png", "audio": "s.wav"}[column]
    records: dict[str, Any] = {}
    stages = {
        "face": lambda: extract_face_task.fn(row, ctx),
        "coeffs": lambda: coefficients_task.fn(row, records["face"], ctx),
        "render": lambda: render_task.fn(row, records["face"], records["coeffs"], ctx),
        "qc": lambda: qc_task.fn(row, records["face"], records["render"], records["coeffs"], ctx),
    }
    for current, run in stages.items():
        if current == stage:
            _swap_for_link(batch / name, tmp_path / "elsewhere" / "secret")
            before = [call for call in fake_pipeline.CALLS if call[0] != "Models"]
            with pytest.raises(OutsidePrefixesError) as caught:
                run()
            # refused before the pipeline got a path
            assert [call for call in fake_pipeline.CALLS if call[0] != "Models"] == before
            break
        records[current] = run()
    message = str(caught.value)
    assert message.startswith(f"{batch / name}: {CHANGED}") and "secret" in message
    assert _files_holding(tmp_path / "out", b"private bytes") == []


def test_the_batch_fails_a_row_whose_photo_is_swapped_after_validation(
    tmp_path: Path, fake_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole flow: the swap happens right after ``load_manifest`` validated the row (the flow must hand
    the report's prefixes to the stages); the row fails at ``face`` with the clear error."""
    import sys

    manifest, batch = _batch(tmp_path)
    (tmp_path / "elsewhere" / "secret").write_bytes(SECRET)
    module = sys.modules["flows.render_batch"]
    validate = module.load_manifest

    def validate_then_swap(*args: Any, **kwargs: Any) -> Any:
        report = validate(*args, **kwargs)
        _swap_for_link(batch / "p.png", tmp_path / "elsewhere" / "secret")
        return report

    monkeypatch.setattr(module, "load_manifest", validate_then_swap)
    summary = render_batch(manifest=manifest, output=str(tmp_path / "out"), device="cpu")
    row = pd.read_parquet(summary.results_uri).set_index("id").loc["ok"]
    assert (row["status"], row["failed_stage"]) == ("failed", "face")
    assert row["error"].startswith(f"OutsidePrefixesError: {batch / 'p.png'}: {CHANGED}")
    assert fake_pipeline.calls("extract_face") == []
    assert _files_holding(tmp_path / "out", b"private bytes") == []


def test_errors_about_a_checked_copy_name_the_rows_file(tmp_path: Path, fake_pipeline: Any) -> None:
    """The stages read private copies of checked inputs; a bad-input error still names the row's file."""
    from sadtalker.errors import NoFaceError
    from sadtalker.paths import BatchPaths
    from tasks.face import extract_face_task
    from tasks.records import StageContext

    manifest, batch = _batch(tmp_path)
    (batch / "p.png").write_bytes(b"NOFACE")
    report = validate_manifest(manifest)
    ctx = StageContext(
        paths=BatchPaths.create(str(tmp_path / "out"), "b1"),
        device="cpu",
        allowed_prefixes=report.allowed_prefixes,
    )
    with pytest.raises(NoFaceError) as caught:
        extract_face_task.fn(report.rows[0], ctx)
    assert caught.value.path == str(batch / "p.png") and "sadtalker-task-" not in str(caught.value)
