"""Model-only command line: render one photo + speech pair, check a video, manage weights. No Prefect here.

    sadtalker render --image PHOTO --audio SPEECH --out OUT.mp4 [--size 512 --preprocess full --still ...]
    sadtalker qc VIDEO --image PHOTO [--audio SPEECH] [--coefficients X.npz] [--threshold NAME.fail=V ...]
    sadtalker weights fetch|list|synthetic ...
    sadtalker --version

The render flags are generated from :class:`sadtalker.options.RenderOptions` (:func:`with_render_options`):
one per field, with its type, default and description. The batch commands (``run``, ``validate``,
``results``, ...) live in ``flows.cli`` behind the ``sadtalker-batch`` command, which has these commands too.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError

from sadtalker.cli_base import new_app, run_app
from sadtalker.options import ANGLE_FIELDS, RenderOptions, WeightsPolicy, parse_angles
from sadtalker.weights.__main__ import app as weights_app

__all__ = [
    "ThresholdOption",
    "TimeoutOption",
    "WeightsPolicyOption",
    "app",
    "main",
    "with_render_options",
]

# ---------------------------------------------------------------------------------- options of both CLIs

WeightsPolicyOption = Annotated[
    WeightsPolicy | None,
    typer.Option(
        "--weights",
        help="Weights policy: official refuses to start when an official file is missing; synthetic renders "
        "noise (tests); auto uses the official set when complete, else synthetic, loudly "
        "(default: $SADTALKER_WEIGHTS_POLICY, else auto).",
    ),
]


def _timeout_help() -> str:
    from sadtalker.timeouts import StageTimeouts

    defaults = ", ".join(f"{k}={v:g}" for k, v in StageTimeouts().to_dict().items())
    return f"Override a stage's time limit (repeatable), e.g. render_per_frame_s=30; defaults: {defaults}."


TimeoutOption = Annotated[
    list[str] | None, typer.Option("--timeout", metavar="NAME=SECONDS", help=_timeout_help())
]
ThresholdOption = Annotated[
    list[str] | None,
    typer.Option(
        "--threshold",
        metavar="NAME.warn|fail=VALUE",
        help="Override a QC threshold (repeatable), e.g. identity_similarity.fail=0.85; =none removes it.",
    ),
]

# --------------------------------------------------------------------- render flags, from RenderOptions


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _option_parameter(name: str) -> inspect.Parameter:
    """The command-line parameter of :class:`RenderOptions` field ``name``: typer derives ``--name`` (and
    ``--no-name`` for a boolean) from it, its type from the field's, its help from the description."""
    field = RenderOptions.model_fields[name]
    annotation: Any = field.annotation
    option = typer.Option(help=field.description)
    if name in ANGLE_FIELDS:  # click options take one value: the flag repeats, or one value lists them
        annotation = list[str] | None
        option = typer.Option(help=f"{field.description} Repeatable, or one value: '-20 30'.", metavar="DEG")
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=Annotated[annotation, option]
    )


def _options(values: dict[str, Any]) -> RenderOptions:
    """The flags' values as :class:`RenderOptions`; a bad value is a usage error naming its flag (exit 2)."""
    for name in ANGLE_FIELDS:
        try:
            values[name] = [a for text in values[name] for a in parse_angles(text)] if values[name] else None
        except (ValueError, TypeError) as exc:
            raise typer.BadParameter(
                f"not a list of angles in degrees ({exc})", param_hint=_flag(name)
            ) from exc
    try:
        return RenderOptions(**values)
    except ValidationError as exc:
        problems = [(_flag(str(e["loc"][0])), f"{e['msg']} (got {e['input']!r})") for e in exc.errors()]
        if len(problems) == 1:
            raise typer.BadParameter(problems[0][1], param_hint=problems[0][0]) from exc
        raise typer.BadParameter("; ".join(f"{flag}: {text}" for flag, text in problems)) from exc


def with_render_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command(options: RenderOptions, ...)`` as a command that has, in place of ``options``, one flag
    per :class:`RenderOptions` field; it receives the flags' values checked by the model."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "options"]
    flags = [_option_parameter(name) for name in RenderOptions.model_fields]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = _options({name: kwargs.pop(name) for name in RenderOptions.model_fields})
        return command(options=options, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *flags])  # type: ignore[attr-defined]
    return wrapper


# ------------------------------------------------------------------------------------------ the commands

app = new_app("Render one photo + speech pair, check any video, manage the weights. No Prefect here.")
app.add_typer(weights_app, name="weights")


def qc_record_path(video: str | Path) -> Path:
    """Where ``sadtalker render`` writes a clip's QC record: beside it, ``clip.mp4`` -> ``clip.qc.json``."""
    return Path(video).with_suffix(".qc.json")


def _write_json_atomic(path: Path, data: dict) -> None:
    import json

    from sadtalker.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


@app.command("render")
@with_render_options
def render_command(
    options: RenderOptions,
    image: Annotated[str, typer.Option(help="Portrait (PNG, JPEG, WebP, BMP), or a video: its first frame.")],
    audio: Annotated[str, typer.Option(help="Speech (wav, flac, ogg, mp3, m4a, ...).")],
    out: Annotated[str, typer.Option(help="Output .mp4.")],
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    weights: WeightsPolicyOption = None,
    threshold: ThresholdOption = None,
    timeout: TimeoutOption = None,
) -> None:
    """Photo + speech -> talking-head mp4 (and its QC record beside it)."""
    from sadtalker import storage, uris
    from sadtalker.errors import SadTalkerError
    from sadtalker.loader import Models, check_weights
    from sadtalker.pipeline import render_pair
    from sadtalker.qc import resolve_thresholds
    from sadtalker.timeouts import StageTimeouts

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        resolve_thresholds(threshold)  # a bad override fails before minutes of rendering
        timeouts = StageTimeouts.parse(timeout or [])
        # Under `official`, missing files stop here with the fetch command, before any work.
        checked = check_weights(
            weights, (options.size,), (options.preprocess,), enhancers=(options.enhancer,)
        )
        for warning in checked.warnings:
            print(f"WARNING: weights: {warning}", file=sys.stderr)
        models = Models.shared(checked.policy)
        with storage.scratch_dir("sadtalker-refs-") as scratch:
            # reference videos / coefficients may be any fsspec URI: remote ones are downloaded first
            local_refs = {
                name: str(storage.localize(uri, scratch)) if uri and not uris.is_local(uri) else uri
                for name, uri in (("ref_eyeblink", options.ref_eyeblink), ("ref_pose", options.ref_pose))
            }
            result = render_pair(
                image,
                audio,
                out,
                options.model_copy(update=local_refs),
                models=models,
                progress=not quiet,
                thresholds=threshold,
                timeouts=timeouts,
            )
    except (SadTalkerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    size = f"{result.width}x{result.height}"
    print(f"wrote {result.path}: {result.num_frames} frames, {result.duration:.2f} s, {size}")
    print(f"weights: {models.weights_label(options.size, options.preprocess)} (policy {checked.policy})")
    record = qc_record_path(result.path)
    _write_json_atomic(record, result.qc)
    renderer = f"{options.device} {options.dtype}" + (", torch.compile" if options.compile else "")
    print(
        f"{result.seconds_per_frame:.2f} s/frame ({renderer}); QC {result.qc['verdict'].upper()} "
        f"(record: {record})"
    )
    for problem in result.qc["problems"]:
        print(f"  QC: {problem}")
    if result.synthetic_weights:
        print("WARNING: rendered with SYNTHETIC weights (no official checkpoints in the cache): not a face")


@app.command("qc")
def qc_command(
    video: Annotated[str, typer.Argument(help="The video to check.")],
    image: Annotated[
        str | None, typer.Option(help="The source photo (the face the video should show).")
    ] = None,
    audio: Annotated[
        str | None, typer.Option(help="The driving speech (default: the video's own audio track).")
    ] = None,
    coefficients: Annotated[
        str | None, typer.Option(help=".npz (coefficients / coeff_3dmm) or .npy (T, 70) motion coefficients.")
    ] = None,
    weights: Annotated[
        Literal["official", "synthetic", "unknown"],
        typer.Option(
            help="The weights the video was rendered with (synthetic: face metrics are not meaningful)."
        ),
    ] = "unknown",
    samples: Annotated[int, typer.Option(help="Frames sampled for face / identity / sharpness.")] = 16,
    threshold: ThresholdOption = None,
) -> None:
    """Check any video against its inputs: the QC record as JSON on stdout; exit 1 on fail, 2 on bad input."""
    import json

    from sadtalker.errors import SadTalkerError
    from sadtalker.qc import check_video

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not Path(video).is_file():
        print(f"error: {video}: file not found", file=sys.stderr)
        raise typer.Exit(2)
    try:
        report = check_video(
            video,
            image,
            audio,
            coefficients=coefficients,
            thresholds=threshold,
            weights=weights,
            max_samples=samples,
        )
    except (SadTalkerError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(json.dumps(report.to_dict(), indent=2))
    print(f"QC {report.summary()}", file=sys.stderr)
    raise typer.Exit(1 if report.verdict == "fail" else 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command (see the module docstring); returns the exit status."""
    return run_app(app, argv, "sadtalker")


if __name__ == "__main__":
    sys.exit(main())
