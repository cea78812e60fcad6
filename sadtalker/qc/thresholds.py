"""QC thresholds: the protocol version, the default pass / warn / fail limits, per-batch overrides.

A :class:`Threshold` has a ``warn`` and a ``fail`` limit (either may be None) and a direction: ``min``
means larger is better (fail when ``value < fail``), ``max`` means smaller is better (fail when
``value > fail``). Limits equal to the value pass. Metrics without a threshold are shown as ``info``.

Why each default is what it is: ``docs/qc.md`` (one paragraph per metric). Changing a default, a metric's
definition or its name is a change of :data:`QC_PROTOCOL`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

#: Version of the metric definitions and defaults; every QC record carries it.
QC_PROTOCOL = "sadtalker-qc/2"

Direction = Literal["min", "max"]
Verdict = Literal["pass", "warn", "fail", "skipped", "not_meaningful", "info"]
#: Order of severity, worst last (``not_meaningful`` / ``skipped`` / ``info`` never count).
SEVERITY = {"pass": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class Threshold:
    """Limits of one metric. ``direction="min"``: the value must stay at or above the limits."""

    warn: float | None
    fail: float | None
    direction: Direction

    def __post_init__(self) -> None:
        for name in ("warn", "fail"):  # JSON and parquet see floats, whatever the caller typed
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))
        if self.direction not in ("min", "max"):
            raise ValueError(f"direction must be 'min' or 'max', got {self.direction!r}")
        if self.warn is not None and self.fail is not None:
            stricter = self.warn >= self.fail if self.direction == "min" else self.warn <= self.fail
            if not stricter:
                raise ValueError(
                    f"the warn limit {self.warn} must be at least as strict as the fail limit {self.fail} "
                    f"(direction {self.direction})"
                )

    def verdict(self, value: float) -> Literal["pass", "warn", "fail"]:
        """pass / warn / fail of a finite number."""
        worse = (lambda v, limit: v < limit) if self.direction == "min" else (lambda v, limit: v > limit)
        if self.fail is not None and worse(value, self.fail):
            return "fail"
        if self.warn is not None and worse(value, self.warn):
            return "warn"
        return "pass"

    def limit(self, verdict: str) -> float | None:
        return self.fail if verdict == "fail" else self.warn if verdict == "warn" else None

    def to_dict(self) -> dict:
        return {"warn": self.warn, "fail": self.fail, "direction": self.direction}


#: Direction of every numeric metric (so that an override can also give an ``info`` metric limits).
DIRECTIONS: dict[str, Direction] = {
    "frames": "min",
    "fps": "min",
    "width": "min",
    "height": "min",
    "av_drift_frames": "max",
    "frame_count_error": "max",
    "blank_fraction": "max",
    "black_fraction": "max",
    "washed_out_fraction": "max",
    "longest_frozen_run": "max",
    "nonfinite_frames": "max",
    "face_presence": "min",
    "face_in_region": "min",
    "identity_similarity": "min",
    "sharpness_ratio": "min",
    "sharpness_cpbd": "min",
    "source_cpbd": "min",
    "sync_correlation": "min",
    "sync_offset_frames": "max",  # compared in absolute value
    "lse_d": "max",
    "lse_c": "min",
    "pose_std_deg": "min",
    "beat_align": "min",
    "expression_speech_corr": "min",
}

#: Metrics whose value is signed but judged by its magnitude.
ABSOLUTE = frozenset({"sync_offset_frames"})

#: Defaults (docs/qc.md says why). Frame counts are frames of the clip's own rate (25 fps here).
DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "frames": Threshold(None, 1, "min"),  # a video with no frame
    "frame_count_error": Threshold(None, 0, "max"),  # the writer is exact: any missing frame is a defect
    "av_drift_frames": Threshold(1.0, 2.0, "max"),
    "blank_fraction": Threshold(0.0, 0.05, "max"),
    "black_fraction": Threshold(0.0, 0.05, "max"),
    "washed_out_fraction": Threshold(0.0, 0.05, "max"),
    "longest_frozen_run": Threshold(8, 25, "max"),  # 0.32 s / 1 s without a changed pixel
    "nonfinite_frames": Threshold(None, 0, "max"),
    "face_presence": Threshold(0.9, 0.7, "min"),
    "face_in_region": Threshold(0.9, 0.7, "min"),
    "identity_similarity": Threshold(0.93, 0.90, "min"),  # cosine of dlib descriptors; 0.91 ~ dlib's 0.6
    "sharpness_ratio": Threshold(0.4, 0.2, "min"),
    "sync_correlation": Threshold(0.3, 0.1, "min"),
    "sync_offset_frames": Threshold(1, 2, "max"),  # |lag|: 2 frames (80 ms) warn, 3+ (120 ms) fail
    "lse_d": Threshold(8.5, 10.0, "max"),
    "lse_c": Threshold(5.0, 3.0, "min"),
    "pose_std_deg": Threshold(0.2, None, "min"),
    "expression_speech_corr": Threshold(0.0, None, "min"),
}

ThresholdOverrides = Mapping[str, "Threshold | Mapping[str, float | None]"] | Iterable[str]


def _number(text: str, where: str) -> float | None:
    if text.strip().lower() in ("none", "null", "off", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number (or 'none')") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {text!r} is not finite")
    return value


def parse_threshold_overrides(overrides: ThresholdOverrides | None) -> dict[str, dict[str, float | None]]:
    """Normalise per-batch overrides to ``{metric: {"warn"?: v, "fail"?: v}}`` (only the limits given).

    Accepts CLI strings ``"identity_similarity.fail=0.5"`` (``=none`` removes a limit), a mapping
    ``{"identity_similarity": {"fail": 0.5}}`` (a flow parameter, JSON) or a mapping of :class:`Threshold`.

    Raises:
        ValueError: unknown metric or limit name, or a value that is not a number.
    """
    if overrides is None:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    if isinstance(overrides, Mapping):
        for name, limits in overrides.items():
            if name not in DIRECTIONS:
                raise ValueError(f"unknown QC metric {name!r}; known: {', '.join(sorted(DIRECTIONS))}")
            if isinstance(limits, Threshold):
                limits = {"warn": limits.warn, "fail": limits.fail}
            if not isinstance(limits, Mapping):
                raise ValueError(f"{name}: expected a mapping like {{'fail': 0.5}}, got {limits!r}")
            for key, value in limits.items():
                if key == "direction":
                    continue  # fixed per metric; accepted so that a stored record can be fed back
                if key not in ("warn", "fail"):
                    raise ValueError(f"{name}: unknown limit {key!r} (warn or fail)")
                number = value if value is None else _number(str(value), f"{name}.{key}")
                out.setdefault(name, {})[key] = number
        return out
    if isinstance(overrides, str):
        overrides = [overrides]
    for item in overrides:
        key, sep, value = str(item).partition("=")
        name, dot, limit = key.strip().rpartition(".")
        if not sep or not dot:
            raise ValueError(f"threshold override {item!r}: expected NAME.warn=VALUE or NAME.fail=VALUE")
        if name not in DIRECTIONS:
            raise ValueError(f"unknown QC metric {name!r}; known: {', '.join(sorted(DIRECTIONS))}")
        if limit not in ("warn", "fail"):
            raise ValueError(f"threshold override {item!r}: the limit must be 'warn' or 'fail'")
        out.setdefault(name, {})[limit] = _number(value, f"{name}.{limit}")
    return out


def resolve_thresholds(overrides: ThresholdOverrides | None = None) -> dict[str, Threshold]:
    """The defaults with ``overrides`` applied (see :func:`parse_threshold_overrides`).

    Raises:
        ValueError: bad overrides, or a warn limit laxer than the fail limit.
    """
    merged = dict(DEFAULT_THRESHOLDS)
    for name, limits in parse_threshold_overrides(overrides).items():
        base = merged.get(name, Threshold(None, None, DIRECTIONS[name]))
        merged[name] = replace(base, **limits)
    return {name: t for name, t in merged.items() if t.warn is not None or t.fail is not None}


def thresholds_to_dict(thresholds: Mapping[str, Threshold]) -> dict[str, dict]:
    """JSON form (``batch.json``'s ``thresholds``, ``qc.parquet``'s ``thresholds`` column)."""
    return {name: t.to_dict() for name, t in sorted(thresholds.items())}
