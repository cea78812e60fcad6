"""The render options are declared once (sadtalker.options): the manifest's columns, the command-line flags
and RenderOptions cannot drift apart; ``--version`` on both command lines."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, get_args

import pytest
import typer

from flows.cli import app as batch_app
from flows.cli import main as batch_main
from manifests.schema import OPTION_COLUMNS, REQUIRED_COLUMNS, ManifestRow
from sadtalker.cli import app as model_app
from sadtalker.cli import main as model_main
from sadtalker.cli import with_render_options
from sadtalker.cli_base import run_app
from sadtalker.options import WORKER_FIELDS, DType, RenderOptions
from sadtalker.versions import memory_allocator

TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")


def _flags(app: typer.Typer, *path: str) -> dict[str, Any]:
    """``{--flag: click parameter}`` of the command at ``path`` of ``app``."""
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return {opt: param for param in command.params for opt in [*param.opts, *param.secondary_opts]}


def _parse(*argv: str) -> RenderOptions:
    """The RenderOptions that the render flags ``argv`` give."""
    parsed: list[RenderOptions] = []
    probe = typer.Typer()
    probe.command()(with_render_options(lambda options: parsed.append(options)))
    assert run_app(probe, argv, "probe") == 0
    return parsed[0]


def test_every_option_is_a_column_and_a_flag_except_the_workers_fields() -> None:
    fields = set(RenderOptions.model_fields)
    assert {"device", "dtype", "compile"} == WORKER_FIELDS
    assert fields - WORKER_FIELDS == OPTION_COLUMNS
    assert set(ManifestRow.model_fields) == OPTION_COLUMNS | set(REQUIRED_COLUMNS)
    for name in OPTION_COLUMNS:  # the columns are the options' own fields: same type, default, description
        assert repr(ManifestRow.model_fields[name]) == repr(RenderOptions.model_fields[name]), name
    for app, path in ((model_app, ["render"]), (batch_app, ["render"])):
        flags = _flags(app, *path)
        assert {f"--{name.replace('_', '-')}" for name in fields} <= set(flags)
        assert flags["--no-still"] is flags["--still"]  # booleans have both spellings
        for name, field in RenderOptions.model_fields.items():
            assert flags[f"--{name.replace('_', '-')}"].help.startswith(field.description), name


def test_flags_give_the_options_with_the_models_defaults() -> None:
    assert _parse() == RenderOptions()
    options = _parse(
        *(
            "--size",
            "512",
            "--preprocess",
            "full",
            "--still",
            "--pose-style",
            "45",
            "--expression-scale",
            "0.5",
        ),
        *("--input-yaw", "10", "--input-yaw", "-20;30", "--input-roll", "-5 5", "--seed", "7"),
        *("--batch-size", "8", "--enhancer", "gfpgan", "--device", "cuda:1", "--dtype", "bfloat16"),
        *("--ref-pose", "s3://refs/nod.mp4"),
    )
    assert options == RenderOptions(
        size=512,
        preprocess="full",
        still=True,
        pose_style=45,
        expression_scale=0.5,
        input_yaw=(10.0, -20.0, 30.0),
        input_roll=(-5.0, 5.0),
        seed=7,
        batch_size=8,
        enhancer="gfpgan",
        device="cuda:1",
        dtype="bfloat16",
        ref_pose="s3://refs/nod.mp4",
    )
    assert options.input_yaw == (10.0, -20.0, 30.0) and isinstance(hash(options), int)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--pose-style", "46"], "--pose-style"),
        (["--batch-size", "0"], "--batch-size"),
        (["--input-yaw", "95"], "--input-yaw"),
        (["--input-pitch", "ten"], "--input-pitch"),
        (["--size", "300"], "--size"),
        (["--preprocess", "zoom"], "--preprocess"),
    ],
)
def test_a_bad_value_is_a_one_line_usage_error_naming_the_flag(
    argv: list[str], flag: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.mp4")
    assert model_main(["render", "--image", "p.png", "--audio", "s.wav", "--out", out, *argv]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and flag in errors[0], errors


def test_the_batch_run_takes_the_models_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def render_batch(**kwargs: Any) -> Any:
        seen.append(kwargs["dtype"])
        raise RuntimeError("stop here")

    monkeypatch.setattr("flows.render_batch.render_batch", render_batch)
    for dtype in get_args(DType):
        assert batch_main(["run", "m.parquet", "-o", "out", "--dtype", dtype]) == 2  # the spy's stop
    assert batch_main(["run", "m.parquet", "-o", "out", "--dtype", "float64"]) == 2
    assert seen == list(get_args(DType))


@pytest.mark.parametrize("main", [model_main, batch_main], ids=["sadtalker", "sadtalker-batch"])
def test_version_names_the_project_and_its_libraries(main: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    first, libraries = capsys.readouterr().out.strip().splitlines()
    assert first == f"sadtalker-batch {metadata.version('sadtalker-batch')}"
    assert f"torch {metadata.version('torch')}" in libraries
    assert f"prefect {metadata.version('prefect')}" in libraries and "python 3." in libraries


@pytest.mark.parametrize("main", [model_main, batch_main], ids=["sadtalker", "sadtalker-batch"])
def test_no_command_shows_the_commands_and_exits_2(main: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2 and "render" in capsys.readouterr().err  # the usage, as an error
    assert main(["--help"]) == 0
    assert main(["no-such-command"]) == 2 and "no-such-command" in capsys.readouterr().err


def test_allocator_is_named_from_the_loaded_libraries(tmp_path: Path) -> None:
    """glibc unless a tcmalloc / jemalloc / mimalloc is mapped; unknown without /proc."""
    maps = tmp_path / "maps"
    libc = "7f00-7f01 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
    maps.write_text(libc)
    assert memory_allocator(maps) == "glibc"
    maps.write_text(
        "7e00-7e01 r-xp 00000000 08:01 7 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4\n" + libc
    )
    assert memory_allocator(maps) == "libtcmalloc_minimal.so.4"
    assert memory_allocator(tmp_path / "missing") == "unknown"


@pytest.mark.skipif(not TCMALLOC.exists(), reason=f"{TCMALLOC} not installed (Debian: libtcmalloc-minimal4)")
def test_a_preloaded_tcmalloc_is_recorded_in_the_versions() -> None:
    """The label comes from the running process: preloaded, it is named; not preloaded, glibc is."""
    code = "from sadtalker.versions import versions; print(versions()['allocator'])"
    env = {**os.environ, "LD_PRELOAD": str(TCMALLOC)}

    def allocator(env: dict[str, str]) -> str:
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        return run.stdout.strip()

    assert allocator(env).startswith("libtcmalloc_minimal.so.4")  # the loaded file: ...so.4.5.10 here
    env.pop("LD_PRELOAD")
    assert allocator(env) == "glibc"
