"""Model-only command line: render one photo + speech pair, manage weights. No Prefect here.

    sadtalker render --image PHOTO --audio SPEECH --out OUT.mp4 [--size 512 --preprocess full --still ...]
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

from sadtalker.options import RenderOptions

_HELP = {
    "size": "render size in pixels",
    "preprocess": "crop mode: crop (face only), extcrop (face + border), resize (whole photo), "
    "full / extfull (paste the face back into the whole photo)",
    "still": "keep the source head pose (less head motion)",
    "pose_style": "head-motion style, 0-45",
    "expression_scale": "multiply the expression coefficients (1 = as predicted)",
    "ref_eyeblink": "reference coefficients (.npz with coeff_3dmm / .npy) whose expression drives the eyes",
    "ref_pose": "reference coefficients whose head motion is added",
    "input_yaw": "free-view yaw angles in degrees, interpolated over the clip",
    "input_pitch": "free-view pitch angles in degrees",
    "input_roll": "free-view roll angles in degrees",
    "seed": "seed of every random draw (blinks, pose noise)",
    "batch_size": "frames rendered at once",
    "device": "cpu, cuda or cuda:N",
    "dtype": "renderer precision (float16/bfloat16 only on a GPU)",
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


def _render(args: argparse.Namespace) -> int:
    from sadtalker.errors import SadTalkerError
    from sadtalker.pipeline import render_pair

    try:
        options = options_from_args(args)
        result = render_pair(args.image, args.audio, args.out, options, progress=not args.quiet)
    except (SadTalkerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = f"{result.width}x{result.height}"
    print(f"wrote {result.path}: {result.num_frames} frames, {result.duration:.2f} s, {size}")
    qc = "passed" if result.qc["passed"] else "; ".join(result.qc["problems"])
    print(f"{result.seconds_per_frame:.2f} s/frame; QC {qc}")
    if result.synthetic_weights:
        print("WARNING: rendered with SYNTHETIC weights (no official checkpoints in the cache): not a face")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sadtalker", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="photo + speech -> talking-head mp4")
    render.add_argument("--image", required=True, help="portrait (PNG, JPEG, WebP, BMP)")
    render.add_argument("--audio", required=True, help="speech (wav, flac, ogg, mp3, m4a, ...)")
    render.add_argument("--out", required=True, help="output .mp4")
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    add_option_arguments(render)
    render.set_defaults(func=_render)
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
