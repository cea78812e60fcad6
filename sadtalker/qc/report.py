"""The batch QC report (``<batch>/report.html``) and the nightly index (``<output>/index.html``).

Both pages are ONE self-contained HTML file each: CSS and JS inline, images and plots embedded as
``data:`` URIs, and a Content-Security-Policy that forbids every network request (``default-src 'none'``;
the inline script is allowed by its SHA-256 only). So a report opens the same from local disk, from an S3
console download or as a static file, never calls home, and an id or error message that slipped through
escaping still could not run script.

Layers:
    - pure renderers :func:`render_report_html` and :func:`render_index_html` (dicts in, HTML text out;
      jinja2 templates in ``sadtalker/qc/templates`` with autoescape on: ids and errors are user data);
    - storage glue :func:`build_report` and :func:`build_index`, which read the batch folder through
      :mod:`sadtalker.storage` (local, ``file://``, ``s3://``, ...) and write the page atomically.

Plots are matplotlib (imported lazily, object API ``matplotlib.figure.Figure`` on the Agg canvas, never
pyplot, which keeps global state and is not thread-safe; one module lock around all plotting because
matplotlib's font and text caches are shared), saved as small palette PNGs.

Size for large batches: the per-metric distribution plots are one per metric, whatever the batch size;
per-item media (source photo, frame strip, mouth-vs-speech curve) and the per-item detail cards are
embedded for the first ``max_item_media`` items in review order (failures first) and the page says so;
every item keeps its row in the table.

Nothing here imports Prefect.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import functools
import hashlib
import io
import json
import logging
import math
import posixpath
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sadtalker import storage, uris
from sadtalker.qc.record import HEADLINE_METRICS, METRICS
from sadtalker.redaction import redact

__all__ = [
    "MAX_ITEM_MEDIA",
    "build_index",
    "build_report",
    "format_number",
    "render_index_html",
    "render_report_html",
]

log = logging.getLogger(__name__)

#: Per-item images, curves and detail cards are embedded for this many items (failures first).
MAX_ITEM_MEDIA = 500
TEMPLATES = Path(__file__).with_name("templates")

#: Review order: what a reviewer must look at first comes first.
#: error: the row failed before QC could judge it; fail/warn/pass: the QC verdict; none: succeeded, no QC.
CATEGORY_RANK: dict[str, int] = {"error": 0, "fail": 1, "none": 2, "warn": 3, "pass": 4}
CATEGORY_LABEL: dict[str, str] = {
    "error": "run failed",
    "fail": "QC fail",
    "none": "no QC",
    "warn": "QC warn",
    "pass": "QC pass",
}
#: Metric display order (the contract's groups); metrics not listed follow, by name.
METRIC_ORDER: tuple[str, ...] = tuple(m.name for m in METRICS)
_VERDICT_COLOURS = {
    "pass": "#2e9d4f",
    "warn": "#e69500",
    "fail": "#d62f2f",
    "other": "#9aa3ad",  # skipped / not meaningful / info
}
_PLOT_LOCK = threading.Lock()
_READ_WORKERS = 8


# ---------------------------------------------------------------------------------------------------------
# Formatting


def format_number(value: Any) -> str:
    """``value`` for reading: numbers to 3 significant figures (no exponent between 1e-3 and 1e6), booleans
    as yes/no, None as an en dash, anything else as its text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1000:
            rounded = float(f"{value:.3g}")
            return f"{rounded:.0f}" if magnitude < 1e6 else f"{value:.3g}"
        if magnitude < 1e-3:
            return f"{value:.2e}"
        return f"{value:.3g}"
    return str(value)


def _threshold_text(threshold: Mapping[str, Any] | None) -> str:
    """``fail < 0.5 · warn < 0.6`` (direction min: the value must stay above) or with ``>`` for max."""
    if not threshold:
        return ""
    sign = ">" if threshold.get("direction") == "max" else "<"
    parts = [
        f"{level} {sign} {format_number(threshold[level])}"
        for level in ("fail", "warn")
        if threshold.get(level) is not None
    ]
    return " · ".join(parts)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format_time(value: Any) -> str:
    """An ISO timestamp as ``2025-06-01 02:13 UTC`` (naive times are taken as UTC); other text as is."""
    parsed = _parse_time(value)
    if parsed is None:
        return str(value) if value else "unknown"
    return parsed.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _data_uri(image: bytes | None) -> str | None:
    """``data:`` URI of JPEG / PNG bytes; None for anything else (a broken image is left out, not shown)."""
    if not image:
        return None
    if image[:3] == b"\xff\xd8\xff":
        mime = "image/jpeg"
    elif image[:8] == b"\x89PNG\r\n\x1a\n":
        mime = "image/png"
    else:
        return None
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def _text(value: Any) -> str | None:
    """Text of user data with credentials removed (the flow redacts too; a report must never leak)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return redact(str(value))


# ---------------------------------------------------------------------------------------------------------
# Plots (matplotlib, lazily imported, Agg canvas, one lock)


def _figure(width_in: float, height_in: float, dpi: int = 100) -> Any:
    """A new ``Figure`` on the Agg canvas (no pyplot: no global figure manager)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _png_data_uri(fig: Any, colours: int = 64) -> str:
    """The figure as a palette PNG ``data:`` URI (a quarter of matplotlib's RGBA PNG for line plots)."""
    from PIL import Image

    fig.canvas.draw()
    rgba = Image.frombuffer("RGBA", fig.canvas.get_width_height(), bytes(fig.canvas.buffer_rgba()))
    small = rgba.convert("RGB").quantize(colors=colours, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    small.save(buf, format="PNG")  # optimize=True: 3x the time for 4 % fewer bytes
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _style_axes(ax: Any, fontsize: float = 7) -> None:
    ax.tick_params(labelsize=fontsize, length=2, pad=1)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _sync_caption(qc: Mapping[str, Any]) -> str:
    """``r=0.62 at lag +1 frames`` from the record's sync metric and series ("" when neither is there)."""
    sync = (qc.get("metrics") or {}).get("sync_correlation") or {}
    lag = (qc.get("series") or {}).get("best_lag_frames")
    parts = []
    if _is_number(sync.get("value")):
        parts.append(f"r={format_number(float(sync['value']))}")
    if _is_number(lag):
        parts.append(f"at lag {int(lag):+d} frames")
    return " ".join(parts)


def _sync_curve(qc: Mapping[str, Any]) -> str | None:
    """Mouth opening (blue line) against the speech envelope (orange area) over time, each scaled to 0..1,
    as a PNG ``data:`` URI; None when the record has no series. The legend is the HTML caption."""
    series = qc.get("series") or {}
    mouth = [float(v) if v is not None else math.nan for v in series.get("mouth_opening") or []]
    speech = [float(v) if v is not None else math.nan for v in series.get("speech_envelope") or []]
    if len(mouth) < 2 and len(speech) < 2:
        return None
    fps = float(series.get("fps") or 25.0)

    def scaled(values: list[float]) -> list[float]:
        finite = [v for v in values if math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        span = hi - lo or 1.0
        return [(v - lo) / span if math.isfinite(v) else math.nan for v in values]

    with _PLOT_LOCK:
        fig, ax = _curve_axes()
        for artist in [*ax.lines, *ax.collections]:  # the previous item's curves
            artist.remove()
        duration = max(len(speech), len(mouth)) / fps
        if len(speech) >= 2:
            times = [i / fps for i in range(len(speech))]
            ax.fill_between(times, scaled(speech), color="#f2a541", alpha=0.35, lw=0)
            ax.plot(times, scaled(speech), color="#d98200", lw=0.8)
        if len(mouth) >= 2:
            ax.plot([i / fps for i in range(len(mouth))], scaled(mouth), color="#2b5fb4", lw=1.3)
        ax.set_xlim(-0.01 * duration, duration * 1.01)
        return _png_data_uri(fig)


_CURVE_AXES: list[Any] = []


def _curve_axes() -> tuple[Any, Any]:
    """The one figure the per-item curves are drawn on, made once and reused under :data:`_PLOT_LOCK`: making
    a figure and its tick objects is most of the cost of a small plot (~75 -> ~30 ms per item
    on this project's 2-core CI box, with the PNG encoding)."""
    if not _CURVE_AXES:
        fig = _figure(4.4, 1.2)
        ax = fig.add_axes((0.02, 0.22, 0.96, 0.74))
        ax.set_ylim(-0.05, 1.08)
        ax.set_yticks([])
        ax.xaxis.set_major_formatter(lambda x, _pos: f"{x:g} s")
        _style_axes(ax, 6)
        ax.spines["left"].set_visible(False)
        _CURVE_AXES[:] = [fig, ax]
    return _CURVE_AXES[0], _CURVE_AXES[1]


def _distribution_plot(
    name: str, values: Sequence[tuple[float, str]], threshold: Mapping[str, Any] | None
) -> str:
    """Histogram of one metric over the batch, stacked by verdict colour, thresholds marked and the failing
    side shaded. ``values``: ``(value, verdict)`` pairs."""
    groups = {"pass": [], "warn": [], "fail": [], "other": []}
    for value, verdict in values:
        groups[verdict if verdict in groups else "other"].append(value)
    data = [v for v, _ in values]
    lo, hi = min(data), max(data)
    marks = {
        level: float(threshold[level])
        for level in ("warn", "fail")
        if threshold and _is_number(threshold.get(level))
    }
    view_lo, view_hi = min([lo, *marks.values()]), max([hi, *marks.values()])
    pad = (view_hi - view_lo) * 0.08 or max(abs(view_hi) * 0.1, 0.5)
    view_lo, view_hi = view_lo - pad, view_hi + pad
    bins_range = (lo, hi) if hi > lo else (lo - pad / 2, hi + pad / 2)
    bins = max(5, min(30, int(math.sqrt(len(data)) * 2)))
    with _PLOT_LOCK:
        fig = _figure(2.9, 1.35)
        ax = fig.add_axes((0.13, 0.2, 0.84, 0.72))
        if threshold and marks:
            maximum = threshold.get("direction") == "max"
            fail, warn = marks.get("fail"), marks.get("warn")
            edge = view_hi if maximum else view_lo
            if fail is not None:
                ax.axvspan(*sorted((fail, edge)), color=_VERDICT_COLOURS["fail"], alpha=0.08, lw=0)
            if warn is not None:
                inner = fail if fail is not None else edge
                ax.axvspan(*sorted((warn, inner)), color=_VERDICT_COLOURS["warn"], alpha=0.08, lw=0)
        keys = [k for k in ("pass", "warn", "fail", "other") if groups[k]]
        ax.hist(
            [groups[k] for k in keys],
            bins=bins,
            range=bins_range,
            stacked=True,
            color=[_VERDICT_COLOURS[k] for k in keys],
            edgecolor="white",
            linewidth=0.4,
        )
        for level, x in marks.items():
            ax.axvline(x, color=_VERDICT_COLOURS[level], lw=1.1, ls="-" if level == "fail" else "--")
            ax.text(
                x,
                1.0,
                f" {level}",
                color=_VERDICT_COLOURS[level],
                fontsize=6,
                va="top",
                transform=ax.get_xaxis_transform(),
            )
        ax.set_xlim(view_lo, view_hi)
        ax.yaxis.get_major_locator().set_params(integer=True)
        _style_axes(ax, 6)
        return _png_data_uri(fig, colours=32)


def _pass_rate_plot(points: Sequence[tuple[dt.datetime, float]]) -> str | None:
    """Pass rate (%) per night, oldest to newest, as a PNG ``data:`` URI; None under two points."""
    if len(points) < 2:
        return None
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    with _PLOT_LOCK:
        fig = _figure(8.0, 1.8)
        ax = fig.add_axes((0.06, 0.17, 0.92, 0.76))
        xs = [p[0] for p in points]
        ys = [p[1] * 100 for p in points]
        ax.plot(xs, ys, color="#2b5fb4", lw=1.4, marker="o", ms=3)
        ax.fill_between(xs, ys, color="#2b5fb4", alpha=0.08, lw=0)
        ax.set_ylim(0, 105)
        ax.set_ylabel("QC pass %", fontsize=7)
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.xaxis.get_offset_text().set_fontsize(7)
        ax.grid(axis="y", color="#e3e6ea", lw=0.6)
        _style_axes(ax, 7)
        return _png_data_uri(fig)


# ---------------------------------------------------------------------------------------------------------
# Templates


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    """The jinja2 environment: templates from ``sadtalker/qc/templates``, autoescape ON for every template
    (ids and error messages are user data), undefined names are errors."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    return env


@functools.lru_cache(maxsize=4)
def _asset(name: str) -> tuple[str, str]:
    """Text of a static template asset (CSS / JS) and its CSP hash ``'sha256-…'``."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return text, f"'sha256-{digest}'"


def _render(template: str, **context: Any) -> str:
    from markupsafe import Markup

    css, css_hash = _asset("style.css")
    js, js_hash = _asset("report.js")
    # No network at all; only our own inline style and script (by hash: no style attributes, no injected
    # script can run even if escaping ever failed).
    csp = (
        f"default-src 'none'; img-src data:; style-src {css_hash}; script-src {js_hash}; "
        "base-uri 'none'; form-action 'none'"
    )
    # The assets are our own static files, inserted verbatim (not user data).
    return (
        _environment().get_template(template).render(css=Markup(css), script=Markup(js), csp=csp, **context)
    )


# ---------------------------------------------------------------------------------------------------------
# The report


def _category(item: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(category, qc verdict)`` of an item (see :data:`CATEGORY_RANK`)."""
    qc = item.get("qc") or {}
    verdict = item.get("qc_verdict") or qc.get("verdict")
    if not verdict and item.get("qc_status") in ("ok", "warn"):  # pre-verdict results (qc_status ok|warn)
        verdict = "pass" if item["qc_status"] == "ok" else "warn"
    verdict = verdict if verdict in ("pass", "warn", "fail") else None
    if verdict == "fail":
        return "fail", verdict
    if item.get("status") == "failed":
        return "error", verdict
    return (verdict or "none"), verdict


def _metric_order(names: Iterable[str]) -> list[str]:
    position = {name: i for i, name in enumerate(METRIC_ORDER)}
    return sorted(set(names), key=lambda n: (position.get(n, len(position)), n))


def _verdict_class(verdict: Any) -> str:
    return f"v-{verdict}" if verdict in ("pass", "warn", "fail") else "v-other"


def _derive_weights(batch: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> str:
    if batch.get("weights"):
        return str(batch["weights"])
    flags = {bool(i["synthetic_weights"]) for i in items if i.get("synthetic_weights") is not None}
    if flags:
        return "mixed" if len(flags) == 2 else ("synthetic" if True in flags else "official")
    kinds = {(i.get("qc") or {}).get("weights") for i in items} - {None, "unknown"}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "unknown")


def _item_view(index: int, item: Mapping[str, Any], headline: Sequence[str], media: bool) -> dict[str, Any]:
    """Everything the template shows of one item (pre-formatted; plots made here when ``media``)."""
    qc = item.get("qc") or {}
    category, verdict = _category(item)
    metrics = qc.get("metrics") or {}
    metric_rows = []
    metrics = {k: v if isinstance(v, Mapping) else {"value": v} for k, v in metrics.items()}
    for name in _metric_order(metrics):
        m = metrics[name]
        metric_rows.append(
            {
                "name": name,
                "value": format_number(m.get("value")),
                "unit": m.get("unit") or "",
                "verdict": m.get("verdict") or "",
                "cls": _verdict_class(m.get("verdict")),
                "threshold": _threshold_text(m.get("threshold")),
                "group": m.get("group") or "",
                "note": _text(m.get("note")) or "",
            }
        )
    cells = []
    for name in headline:
        m = metrics.get(name) or {}
        value = m.get("value")
        cells.append(
            {
                "text": format_number(value) if name in metrics else "",
                "sort": repr(float(value)) if _is_number(value) else "",
                "cls": _verdict_class(m.get("verdict")),
                "title": m.get("verdict") or "",
            }
        )
    problems = [_text(p) or "" for p in qc.get("problems") or _row_problems(item.get("qc_problems"))]
    error = _text(item.get("error"))
    item_id = _text(item.get("id")) or f"row {item.get('row', index)}"
    row = item.get("row")
    summary = error or "; ".join(problems)
    view = {
        "idx": index,
        "id": item_id,
        "row": row if row is not None else "",
        "row_sort": str(row) if _is_number(row) else "",
        "category": category,
        "rank": CATEGORY_RANK[category],
        "label": CATEGORY_LABEL[category],
        "verdict": verdict or "",
        "status": _text(item.get("status")) or "",
        "failed_stage": _text(item.get("failed_stage")) or "",
        "error": error or "",
        "problems": problems,
        "summary": summary,
        "search": " ".join([item_id, category, summary, _text(item.get("failed_stage")) or ""]).lower(),
        "cells": cells,
        "metrics": metric_rows,
        "weights": qc.get("weights") or "",
        "protocol": qc.get("protocol") or "",
        "video": _relative_video(item),
        "media": media,
        "source": None,
        "strip": None,
        "curve": None,
        "sync_caption": _sync_caption(qc) if qc else "",
    }
    if media:
        view["source"] = _data_uri(item.get("source_jpg"))
        view["strip"] = _data_uri(item.get("strip_jpg"))
        try:
            view["curve"] = _sync_curve(qc) if qc else None
        except Exception as exc:  # a malformed series must not cost the whole report
            log.warning("no sync curve for %s: %s", item_id, exc)
    return view


def _row_problems(value: Any) -> list[str]:
    """``results.parquet``'s ``qc_problems`` (a list, a JSON list or ``; ``-joined text) when the item has no
    ``qc.json`` to read them from."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return [p for p in value.split("; ") if p]
        value = parsed if isinstance(parsed, list) else [value]
    if isinstance(value, (list, tuple)):
        return [str(p) for p in value]
    return []


def _relative_video(item: Mapping[str, Any]) -> str | None:
    """``items/<id>/video.mp4`` relative to the report (works on disk and as a static site), when the row has
    a video and a safe id."""
    from sadtalker.paths import PathEscapeError, check_id

    if not item.get("video_uri") or not item.get("id"):
        return None
    try:
        return f"items/{check_id(str(item['id']))}/video.mp4"
    except PathEscapeError:
        return None


def _distributions(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per numeric metric seen in the batch: its plot, threshold and verdict counts."""
    values: dict[str, list[tuple[float, str]]] = {}
    thresholds: dict[str, Any] = {}
    units: dict[str, str] = {}
    for item in items:
        for name, m in ((item.get("qc") or {}).get("metrics") or {}).items():
            if not isinstance(m, Mapping):
                continue
            if m.get("threshold") and name not in thresholds:
                thresholds[name] = m["threshold"]
            units.setdefault(name, m.get("unit") or "")
            if _is_number(m.get("value")):
                values.setdefault(name, []).append((float(m["value"]), str(m.get("verdict") or "other")))
    out = []
    for name in _metric_order(values):
        counts = {k: 0 for k in ("pass", "warn", "fail", "other")}
        for _, verdict in values[name]:
            counts[verdict if verdict in counts else "other"] += 1
        try:
            plot = _distribution_plot(name, values[name], thresholds.get(name))
        except Exception as exc:
            log.warning("no distribution plot for %s: %s", name, exc)
            plot = None
        out.append(
            {
                "name": name,
                "unit": units.get(name, ""),
                "plot": plot,
                "n": len(values[name]),
                "threshold": _threshold_text(thresholds.get(name)),
                "counts": counts,
            }
        )
    return out


def render_report_html(
    batch: Mapping[str, Any], items: Sequence[Mapping[str, Any]], *, max_item_media: int = MAX_ITEM_MEDIA
) -> str:
    """The batch's QC report as one self-contained HTML page.

    Args:
        batch: the ``batch.json`` record (may be empty: the header then shows what the items tell).
        items: one dict per ``results.parquet`` row: the row's fields (``row``, ``id``, ``status``,
            ``failed_stage``, ``error``, ``video_uri``, ``qc_verdict``, ``synthetic_weights``, ...), plus
            ``qc`` (the ``qc.json`` record or None), ``source_jpg`` and ``strip_jpg`` (bytes or None).
        max_item_media: embed images, curves and detail cards for this many items, failures first.
    Returns:
        The HTML text.
    """
    ordered = sorted(
        enumerate(items),
        key=lambda p: (CATEGORY_RANK[_category(p[1])[0]], _row_key(p[1].get("row"), p[0])),
    )
    present = {name for item in items for name in ((item.get("qc") or {}).get("metrics") or {})}
    headline = [name for name in HEADLINE_METRICS if name in present]
    views = [_item_view(i, item, headline, media=i < max_item_media) for i, (_, item) in enumerate(ordered)]
    counts = {
        "rows": len(items),
        "succeeded": sum(1 for i in items if i.get("status") == "succeeded"),
        "failed": sum(1 for i in items if i.get("status") == "failed"),
    }
    for category in CATEGORY_RANK:
        counts[category] = sum(1 for v in views if v["category"] == category)
    for verdict in ("pass", "warn", "fail"):
        counts[f"qc_{verdict}"] = sum(1 for v in views if v["verdict"] == verdict)
    records = [i.get("qc") for i in items if i.get("qc")]
    thresholds = batch.get("thresholds") or {}
    if not thresholds:  # no batch.json: what the records say they were judged against
        for record in records:
            for name, m in (record.get("metrics") or {}).items():
                if m and m.get("threshold"):
                    thresholds.setdefault(name, m["threshold"])
    threshold_rows = [
        {"name": name, "text": _threshold_text(t) if isinstance(t, Mapping) else format_number(t)}
        for name, t in ((n, thresholds[n]) for n in _metric_order(thresholds))
    ]
    versions = {
        str(k): (v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str))
        for k, v in sorted((batch.get("versions") or {}).items())
    }
    weights = _derive_weights(batch, items)
    protocol = batch.get("qc_protocol") or next(
        (r.get("protocol") for r in records if r.get("protocol")), None
    )
    return _render(
        "report.html.j2",
        batch_id=_text(batch.get("batch_id")) or "unknown batch",
        created=_format_time(batch.get("created_at")),
        manifest=_text(batch.get("manifest")) or "",
        output=_text(batch.get("output")) or "",
        has_batch_record=any(k in batch for k in ("created_at", "counts", "versions", "weights")),
        counts=counts,
        weights=weights,
        synthetic=weights in ("synthetic", "mixed"),
        versions=versions,
        thresholds=threshold_rows,
        protocol=protocol or "unknown",
        headline=[name.replace("_", "_\u200b") for name in headline],
        items=views,
        shown_media=min(len(views), max_item_media),
        distributions=_distributions(items),
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _row_key(row: Any, fallback: int) -> float:
    return float(row) if _is_number(row) else float(fallback)


# ---------------------------------------------------------------------------------------------------------
# The index


def _batch_summary(record: Mapping[str, Any], folder: str) -> dict[str, Any]:
    counts = record.get("counts") or {}
    rows = record.get("rows")
    rows = int(rows) if _is_number(rows) else None
    qc_pass = counts.get("qc_pass")
    rate = qc_pass / rows if _is_number(qc_pass) and rows else None
    return {
        "batch_id": _text(record.get("batch_id")) or folder,
        "folder": folder,
        "created": _parse_time(record.get("created_at")),
        "date": _format_time(record.get("created_at")),
        "rows": rows,
        "succeeded": counts.get("succeeded"),
        "failed": counts.get("failed"),
        "qc_pass": qc_pass,
        "qc_warn": counts.get("qc_warn"),
        "qc_fail": counts.get("qc_fail"),
        "pass_rate": rate,
        "pass_rate_text": f"{rate * 100:.1f} %" if rate is not None else "–",
        "weights": _text(record.get("weights")) or "unknown",
        "report": record.get("_report_exists", True),
    }


def render_index_html(batches: Sequence[Mapping[str, Any]]) -> str:
    """The index of an output prefix: every batch, newest first, with its counts, its QC pass rate (rows that
    passed QC over all rows) and a relative link ``<folder>/report.html``; a pass-rate-over-nights plot.

    Args:
        batches: ``batch.json`` records; each may carry ``_folder`` (the batch's folder name under the
            prefix, default its ``batch_id``) and ``_report_exists`` (default True).
    """
    summaries = [_batch_summary(b, str(b.get("_folder") or b.get("batch_id") or "")) for b in batches]
    oldest = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    summaries.sort(key=lambda s: (s["created"] or oldest, s["batch_id"]), reverse=True)
    points = [
        (s["created"], s["pass_rate"])
        for s in reversed(summaries)
        if s["created"] and s["pass_rate"] is not None
    ]
    try:
        plot = _pass_rate_plot(points)
    except Exception as exc:
        log.warning("no pass-rate plot: %s", exc)
        plot = None
    return _render(
        "index.html.j2",
        batches=summaries,
        plot=plot,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


# ---------------------------------------------------------------------------------------------------------
# Storage glue


def _read_optional(uri: str | None) -> bytes | None:
    """The bytes at ``uri``, or None when it is absent or unreadable (logged)."""
    if not uri:
        return None
    try:
        return storage.read_bytes(uri)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s", redact(uri), redact(str(exc)))
        return None


def _read_results(uri: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows = pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pylist()
    for row in rows:  # NaN floats read as None, like nulls
        for key, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                row[key] = None
    return rows


def build_report(batch_uri: str, *, max_item_media: int = MAX_ITEM_MEDIA) -> str:
    """Read a batch folder and write its ``report.html`` (atomically); returns the report's URI.

    Reads ``results.parquet`` (required), ``batch.json`` (optional: without it the header says so and
    shows what the rows tell), and per item ``qc.json``, ``qc_source.jpg`` and ``qc_strip.jpg`` (each
    optional). Rows that failed before QC are shown from their results row only (no stale QC record of an
    earlier run is read for them). Files are read on a small thread pool (object stores: one GET each).
    """
    from sadtalker.paths import BatchPaths, PathEscapeError

    root = uris.normalize(batch_uri)
    output, batch_id = uris.parent(root), posixpath.basename(root.rstrip("/"))
    paths = BatchPaths.create(output, batch_id)
    rows = _read_results(paths.results)
    raw_record = _read_optional(paths.batch_record)
    batch: dict[str, Any] = {}
    if raw_record is not None:
        try:
            batch = json.loads(raw_record.decode("utf-8"))
        except ValueError as exc:
            log.warning("batch.json unreadable, report without it: %s", exc)
    if batch and not batch.get("batch_id"):
        batch["batch_id"] = batch_id

    def item_paths(row: Mapping[str, Any]) -> Any:
        if row.get("status") == "failed" and row.get("failed_stage") not in (None, "qc"):
            return None  # failed before QC: whatever QC files exist are from an earlier run
        try:
            return paths.item(str(row.get("id")))
        except PathEscapeError:  # an invalid id (the row failed validation): it has no files
            return None

    def load_qc(row: Mapping[str, Any]) -> dict[str, Any] | None:
        p = item_paths(row)
        raw = _read_optional(p.qc) if p else None
        if raw is None:
            return None
        try:
            record = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            log.warning("unreadable qc.json for %s: %s", redact(str(row.get("id"))), exc)
            return None
        return record if isinstance(record, dict) else None

    items: list[dict[str, Any]] = [dict(row) for row in rows]
    with concurrent.futures.ThreadPoolExecutor(max_workers=_READ_WORKERS) as pool:
        for item, qc in zip(items, pool.map(load_qc, rows), strict=True):
            item["qc"] = qc
            item["source_jpg"] = item["strip_jpg"] = None
        # images only for the items whose details are embedded (review order, as the renderer sorts)
        ordered = sorted(
            range(len(items)),
            key=lambda i: (CATEGORY_RANK[_category(items[i])[0]], _row_key(items[i].get("row"), i)),
        )[:max_item_media]

        def load_images(i: int) -> tuple[int, bytes | None, bytes | None]:
            p = item_paths(items[i])
            return (i, _read_optional(p.qc_source), _read_optional(p.qc_strip)) if p else (i, None, None)

        for i, source, strip in pool.map(load_images, ordered):
            items[i]["source_jpg"], items[i]["strip_jpg"] = source, strip
    if not batch:
        log.info("no batch.json in %s: report built from results.parquet only", redact(root))
        batch = {"batch_id": batch_id}
    html = render_report_html(batch, items, max_item_media=max_item_media)
    return storage.write_bytes(paths.report, html.encode("utf-8"))


def build_index(output_prefix: str) -> str:
    """List every ``<prefix>/*/batch.json`` and write ``<prefix>/index.html`` (atomically); returns its URI.

    One listing for the records and one for the reports (an object store answers each with one LIST call);
    an unreadable ``batch.json`` is skipped with a warning.
    """
    prefix = uris.normalize(output_prefix)
    fs, path = storage.filesystem(prefix)
    fs.invalidate_cache(path)
    base = path.rstrip("/")
    record_paths = sorted(fs.glob(f"{base}/*/batch.json"))
    reports = {posixpath.basename(posixpath.dirname(p)) for p in fs.glob(f"{base}/*/report.html")}

    def load(record_path: str) -> dict[str, Any] | None:
        folder = posixpath.basename(posixpath.dirname(record_path))
        try:
            record = json.loads(storage.read_bytes(uris.join(prefix, folder, "batch.json")).decode("utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", redact(record_path), redact(str(exc)))
            return None
        if not isinstance(record, dict):
            return None
        return record | {"_folder": folder, "_report_exists": folder in reports}

    with concurrent.futures.ThreadPoolExecutor(max_workers=_READ_WORKERS) as pool:
        batches = [b for b in pool.map(load, record_paths) if b is not None]
    html = render_index_html(batches)
    return storage.write_bytes(uris.join(prefix, "index.html"), html.encode("utf-8"))
