"""Model-only command line: render one photo + speech pair, manage weights. No Prefect here.

    sadtalker render --image PHOTO --audio SPEECH --out OUT.mp4 [--size 512 --preprocess full --still ...]
    sadtalker qc VIDEO --image PHOTO [--audio SPEECH] [--coefficients X.npz] [--threshold NAME.fail=V ...]
    sadtalker weights fetch|list|synthetic ...

The batch commands (``run``, ``validate``, ``results``, ...) live in ``flows.cli`` behind the
``sadtalker-batch`` command, which also forwards ``render`` and ``weights`` here.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from sadtalker.options import RenderOptions

_HELP = {
    "size": "render size in pixels",
    "preprocess": "crop mode: crop (face only), extcrop (face + border), resize (whole photo), "
    "full / extfull (paste the face back into the whole photo)",
    "still": "keep the source head pose (less head motion)",
    "pose_style": "head-motion style, 0-45",
    "expression_scale": "multiply the expression coefficients (1 = as predicted)",
    "ref_eyeblink": "reference video, or coefficients (.npz with coeff_3dmm / .npy), whose expression "
    "drives the eyes (any fsspec URI; told apart by content)",
    "ref_pose": "reference video or coefficients whose head motion is added (any fsspec URI)",
    "input_yaw": "free-view yaw angles in degrees, interpolated over the clip",
    "input_pitch": "free-view pitch angles in degrees",
    "input_roll": "free-view roll angles in degrees",
    "seed": "seed of every random draw (blinks, pose noise)",
    "batch_size": "frames rendered at once",
    "device": "cpu, cuda or cuda:N",
    "dtype": "renderer precision (float16/bfloat16 only on a GPU)",
    "enhancer": "face restoration of each rendered frame: none, or gfpgan (GFPGAN v1.4; needs "
    "`sadtalker weights fetch gfpgan` for official renders; slow on a CPU)",
}


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`RenderOptions` field, typed from the dataclass."""
    hints = typing.get_type_hints(RenderOptions)
    for field in dataclasses.fields(RenderOptions):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        kwargs: dict = {"dest": field.name, "default": field.default, "help": _HELP.get(field.name)}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is typing.Literal:
            kwargs["choices"] = list(args)
            kwargs["type"] = type(args[0])
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            inner = next(a for a in args if a is not type(None))
            if typing.get_origin(inner) is tuple:
                kwargs.update(nargs="+", type=float)
            else:
                kwargs["type"] = inner
        else:
            kwargs["type"] = hint
        parser.add_argument(flag, **kwargs)


def options_from_args(args: argparse.Namespace) -> RenderOptions:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RenderOptions)}
    for name in ("input_yaw", "input_pitch", "input_roll"):
        if values[name] is not None:
            values[name] = tuple(values[name])
    return RenderOptions(**values)


def qc_record_path(video: str | Path) -> Path:
    """Where ``sadtalker render`` writes a clip's QC record: beside it, ``clip.mp4`` -> ``clip.qc.json``."""
    return Path(video).with_suffix(".qc.json")


def _write_json_atomic(path: Path, data: dict) -> None:
    import json

    from sadtalker.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def _render(args: argparse.Namespace) -> int:
    from sadtalker import storage, uris
    from sadtalker.errors import SadTalkerError
    from sadtalker.loader import Models, check_weights
    from sadtalker.pipeline import render_pair
    from sadtalker.qc import resolve_thresholds
    from sadtalker.timeouts import StageTimeouts

    try:
        options = options_from_args(args)
        resolve_thresholds(args.threshold)  # a bad override fails before minutes of rendering
        timeouts = StageTimeouts.parse(args.timeout)
        # Under `official`, missing files stop here with the fetch command, before any work.
        checked = check_weights(
            args.weights, (options.size,), (options.preprocess,), enhancers=(options.enhancer,)
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
                args.image,
                args.audio,
                args.out,
                dataclasses.replace(options, **local_refs),
                models=models,
                progress=not args.quiet,
                thresholds=args.threshold,
                timeouts=timeouts,
            )
    except (SadTalkerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = f"{result.width}x{result.height}"
    print(f"wrote {result.path}: {result.num_frames} frames, {result.duration:.2f} s, {size}")
    print(f"weights: {models.weights_label(options.size, options.preprocess)} (policy {checked.policy})")
    record = qc_record_path(result.path)
    _write_json_atomic(record, result.qc)
    print(f"{result.seconds_per_frame:.2f} s/frame; QC {result.qc['verdict'].upper()} (record: {record})")
    for problem in result.qc["problems"]:
        print(f"  QC: {problem}")
    if result.synthetic_weights:
        print("WARNING: rendered with SYNTHETIC weights (no official checkpoints in the cache): not a face")
    return 0


def _qc(args: argparse.Namespace) -> int:
    """Print the QC record of any video as JSON; exit 1 on fail, 0 on pass / warn, 2 on bad input."""
    import json

    from sadtalker.errors import SadTalkerError
    from sadtalker.qc import check_video

    if not Path(args.video).is_file():
        print(f"error: {args.video}: file not found", file=sys.stderr)
        return 2
    try:
        report = check_video(
            args.video,
            args.image,
            args.audio,
            coefficients=args.coefficients,
            thresholds=args.threshold,
            weights=args.weights,
            max_samples=args.samples,
        )
    except (SadTalkerError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2))
    print(f"QC {report.summary()}", file=sys.stderr)
    return 1 if report.verdict == "fail" else 0


def add_weights_policy_argument(parser: argparse.ArgumentParser) -> None:
    """``--weights official|synthetic|auto`` (both command lines use this one definition)."""
    parser.add_argument(
        "--weights",
        choices=("official", "synthetic", "auto"),
        default=None,
        help="weights policy: official refuses to start when an official file is missing; synthetic renders "
        "noise (tests); auto uses the official set when complete, else synthetic, loudly "
        "(default: $SADTALKER_WEIGHTS_POLICY, else auto)",
    )


def add_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """``--timeout NAME=SECONDS`` (repeatable; both command lines use this one definition)."""
    from sadtalker.timeouts import StageTimeouts

    defaults = ", ".join(f"{k}={v:g}" for k, v in StageTimeouts().to_dict().items())
    parser.add_argument(
        "--timeout",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help=f"override a stage's time limit (repeatable), e.g. render_per_frame_s=30; defaults: {defaults}",
    )


def _add_threshold_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        action="append",
        default=None,
        metavar="NAME.warn|fail=VALUE",
        help="override a QC threshold (repeatable), e.g. identity_similarity.fail=0.85; =none removes it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sadtalker", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="photo + speech -> talking-head mp4")
    render.add_argument(
        "--image", required=True, help="portrait (PNG, JPEG, WebP, BMP), or a video: its first frame"
    )
    render.add_argument("--audio", required=True, help="speech (wav, flac, ogg, mp3, m4a, ...)")
    render.add_argument("--out", required=True, help="output .mp4")
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    add_weights_policy_argument(render)
    _add_threshold_argument(render)
    add_timeout_argument(render)
    add_option_arguments(render)
    render.set_defaults(func=_render)
    qc = sub.add_parser(
        "qc", help="check any video against its inputs; JSON record on stdout, exit 1 on fail"
    )
    qc.add_argument("video", help="the video to check")
    qc.add_argument("--image", help="the source photo (the face the video should show)")
    qc.add_argument("--audio", help="the driving speech (default: the video's own audio track)")
    qc.add_argument(
        "--coefficients", help=".npz (coefficients / coeff_3dmm) or .npy (T, 70) motion coefficients"
    )
    qc.add_argument(
        "--weights",
        choices=["official", "synthetic", "unknown"],
        default="unknown",
        help="the weights the video was rendered with (synthetic: face metrics are not meaningful)",
    )
    qc.add_argument("--samples", type=int, default=16, help="frames sampled for face / identity / sharpness")
    _add_threshold_argument(qc)
    qc.set_defaults(func=_qc)
    weights = sub.add_parser(
        "weights", help="fetch / list official weights, write synthetic ones", add_help=False
    )
    weights.add_argument("rest", nargs=argparse.REMAINDER)
    weights.set_defaults(func=lambda a: _weights(a.rest))
    return parser


def _weights(rest: list[str]) -> int:
    from sadtalker.weights.__main__ import main as weights_main

    return int(weights_main(rest) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
