"""The batch QC report and the nightly index: self-contained, failures first, escaped, and readable in a real
browser (headless Chromium, skipped with a reason where it is not installed)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sadtalker.qc import report
from sadtalker.qc.report import build_index, build_report, format_number, render_report_html

HOSTILE_ID = "<script>alert(1)</script>"
HOSTILE_ERROR = 'RuntimeError: decoder said <b onmouseover="x()">boom</b> & "quit"'
PORTRAIT = Path(__file__).parent / "data" / "portrait.png"


# ---------------------------------------------------------------------------------------------------------
# A fake batch folder


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _source_and_strip() -> tuple[bytes, bytes]:
    face = Image.open(PORTRAIT).convert("RGB").resize((112, 112))
    strip = Image.new("RGB", (112 * 5, 112))
    for i in range(5):  # five "frames" that differ a little, like a talking clip
        frame = np.asarray(face).astype(np.int16) + (i - 2) * 12
        strip.paste(Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)), (112 * i, 0))
    return _jpeg(face), _jpeg(strip)


def _metric(
    value: Any,
    verdict: str,
    group: str,
    warn: float | None = None,
    fail: float | None = None,
    direction: str = "min",
    unit: str = "",
    note: str | None = None,
) -> dict[str, Any]:
    threshold = (
        None if warn is None and fail is None else {"warn": warn, "fail": fail, "direction": direction}
    )
    return {
        "value": value,
        "verdict": verdict,
        "threshold": threshold,
        "unit": unit,
        "group": group,
        "note": note,
    }


def _qc_record(
    verdict: str, identity: float, sync: float, problems: list[str], weights: str, lag: int = 0
) -> dict[str, Any]:
    meaningless = "not meaningful: synthetic weights" if weights == "synthetic" else None
    face_verdict = "not_meaningful" if meaningless else None

    def v(own: str) -> str:
        return face_verdict or own

    t = np.arange(50) / 25.0
    envelope = np.clip(np.sin(2 * np.pi * 1.3 * t), 0, None)
    mouth = np.roll(envelope, lag) * 0.8 + 0.05
    return {
        "protocol": "sadtalker-qc/2",
        "verdict": verdict,
        "problems": problems,
        "weights": weights,
        "metrics": {
            "frames": _metric(50, "pass", "container"),
            "codec": _metric("h264", "info", "container"),
            "has_audio": _metric(True, "pass", "container"),
            "av_drift_frames": _metric(0.0, "pass", "container", 1.0, 2.0, "max", "frames"),
            "longest_frozen_run": _metric(1, "pass", "frames", 5, 12, "max", "frames"),
            "face_presence": _metric(1.0, v("pass"), "face", 0.9, 0.7, note=meaningless),
            "identity_similarity": _metric(
                identity, v("pass" if identity >= 0.6 else "fail"), "identity", 0.6, 0.5, note=meaningless
            ),
            "sharpness_ratio": _metric(0.92, "pass", "sharpness", 0.7, 0.5),
            "sync_correlation": _metric(
                sync, v("pass" if sync >= 0.3 else "warn"), "sync", 0.3, 0.1, note=meaningless
            ),
            "sync_offset_frames": _metric(float(lag), v("pass"), "sync", 2, 3, "max", "frames"),
            "lse_d": _metric(None, "skipped", "sync", note="no syncnet_v2 weights in the cache"),
        },
        "series": {
            "fps": 25.0,
            "mouth_opening": mouth.round(4).tolist(),
            "speech_envelope": envelope.round(4).tolist(),
            "best_lag_frames": lag,
        },
        "video": {"path": "video.mp4", "frames": 50, "fps": 25.0, "width": 256, "height": 256},
        "models": {"landmarker": "dlib", "face_descriptor": "dlib_resnet_v1", "syncnet": None},
        "seconds": 0.4,
    }


def make_batch(
    output: Path,
    batch_id: str,
    *,
    weights: str = "official",
    created_at: str = "2025-06-01T02:00:00Z",
    with_record: bool = True,
) -> Path:
    """A batch folder as the flow writes it: a pass, a warn, a QC fail (with problems), a row that failed at
    render (no QC, hostile error text) and a row with a hostile id that failed validation."""
    root = output / batch_id
    source, strip = _source_and_strip()
    specs = [  # id, status, failed_stage, error, qc record
        ("good-01", "succeeded", None, None, _qc_record("pass", 0.83, 0.62, [], weights, lag=1)),
        (
            "warn-02",
            "succeeded",
            None,
            None,
            _qc_record("warn", 0.74, 0.21, ["sync_correlation: 0.21 < 0.3 (warn)"], weights),
        ),
        (
            "fail-03",
            "failed",
            "qc",
            "QC failed: identity_similarity: 0.31 < 0.5 (fail)",
            _qc_record(
                "fail",
                0.31,
                0.12,
                ["identity_similarity: 0.31 < 0.5 (fail)", "sync_correlation: 0.12 < 0.3 (warn)"],
                weights,
                lag=-2,
            ),
        ),
        ("render-04", "failed", "render", HOSTILE_ERROR, None),
        (HOSTILE_ID, "failed", "validate", f"row id {HOSTILE_ID!r} is not safe", None),
    ]
    rows = []
    for n, (row_id, status, stage, error, qc) in enumerate(specs):
        video = None
        if qc is not None:
            item = root / "items" / row_id
            item.mkdir(parents=True)
            (item / "qc.json").write_text(json.dumps(qc))
            (item / "qc_source.jpg").write_bytes(source)
            (item / "qc_strip.jpg").write_bytes(strip)
            (item / "video.mp4").write_bytes(b"not really a video")
            video = str(item / "video.mp4")
        rows.append(
            {
                "row": n,
                "id": row_id,
                "status": status,
                "failed_stage": stage,
                "error": error,
                "video_uri": video,
                "qc_verdict": qc["verdict"] if qc else None,
                "synthetic_weights": weights == "synthetic",
                "total_s": 12.3456789,
            }
        )
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "results.parquet")
    if with_record:
        record = {
            "batch_id": batch_id,
            "created_at": created_at,
            "manifest": "manifests/nightly.csv",
            "output": str(output),
            "rows": len(rows),
            "counts": {"succeeded": 2, "failed": 3, "qc_pass": 1, "qc_warn": 1, "qc_fail": 1},
            "weights": weights,
            "versions": {"sadtalker_batch": "0.3.0", "torch": "2.13.0"},
            "thresholds": {"identity_similarity": {"warn": 0.6, "fail": 0.5, "direction": "min"}},
            "qc_protocol": "sadtalker-qc/2",
            "report": str(root / "report.html"),
        }
        (root / "batch.json").write_text(json.dumps(record))
    return root


def _table_ids(html: str, table_id: str = "items-table") -> list[str]:
    """The item ids of the table's rows, in document order (unescaped)."""
    import html as html_lib

    body = html.split(f'id="{table_id}"', 1)[1].split("</tbody>", 1)[0]
    cells = re.findall(r'<td class="mono">(?:<a href="[^"]*">)?(.*?)(?:</a>)?</td>', body)
    return [html_lib.unescape(c) for c in cells]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One fake batch and its report (built once: plotting takes a moment on 2 cores)."""
    out = tmp_path_factory.mktemp("out")
    root = make_batch(out, "nightly-a")
    before = {p.relative_to(root) for p in root.rglob("*")}
    uri = build_report(str(root))
    after = {p.relative_to(root) for p in root.rglob("*")}
    assert after - before == {Path("report.html")}, "the report is ONE file and nothing else (no temp files)"
    assert uri == str(root / "report.html")
    return root, Path(uri).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# The report's content


def test_report_is_self_contained(built: tuple[Path, str]) -> None:
    _, html = built
    assert "http://" not in html and "https://" not in html
    for attr, value in re.findall(r'\b(src|href)="([^"]*)"', html):
        if attr == "src":
            assert value.startswith("data:image/"), value[:60]
        else:  # in-page anchors and the item's video beside the report, nothing that leaves the folder
            assert value.startswith("#") or re.fullmatch(r"items/[\w.-]+/video\.mp4", value), value
    assert "<link" not in html and "@import" not in html and "url(" not in html
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html).group(1)
    assert "default-src &#39;none&#39;" in csp or "default-src 'none'" in csp
    # the inline script is allowed by its hash, so the browser runs it (and would run nothing injected)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"sha256-{digest}" in csp
    # embedded pictures: 3 sources + 3 strips + 3 curves + one plot per numeric metric
    assert html.count('alt="source photo"') == 3 and html.count('alt="output frames"') == 3
    assert html.count('alt="mouth opening vs speech envelope"') == 3


def test_report_lists_failures_first_one_row_per_item(built: tuple[Path, str]) -> None:
    _, html = built
    ids = _table_ids(html)
    assert len(ids) == 5 == html.count('<tr class="item ')
    assert ids == ["render-04", HOSTILE_ID, "fail-03", "warn-02", "good-01"]
    categories = re.findall(r'<tr class="item cat-(\w+)"', html)
    assert categories == ["error", "error", "fail", "warn", "pass"]
    # the detail cards follow the same order; the hostile row has no files but still gets its card
    cards = re.findall(r'<article class="card cat-(\w+)"', html)
    assert cards == categories


def test_report_escapes_user_data(built: tuple[Path, str]) -> None:
    _, html = built
    assert HOSTILE_ID not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script") == 1  # ours only
    assert '<b onmouseover="x()">' not in html and "onmouseover=&#34;x()&#34;" in html
    assert "&amp; &#34;quit&#34;" in html


def test_report_header_counts_weights_versions_thresholds(built: tuple[Path, str]) -> None:
    _, html = built
    tiles = {label: n for n, label in re.findall(r"<b>(\d+)</b><span>([\w ]+)</span>", html)}
    assert tiles == {
        "rows": "5",
        "succeeded": "2",
        "run failed": "2",
        "QC fail": "1",
        "QC warn": "1",
        "QC pass": "1",
    }
    assert "nightly-a" in html and "2025-06-01 02:00 UTC" in html and "sadtalker-qc/2" in html
    assert "2.13.0" in html and "fail &lt; 0.5 · warn &lt; 0.6" in html
    assert "SYNTHETIC WEIGHTS" not in html and 'b-official">official' in html
    # numbers for reading: 3 significant figures; problems listed; verdict colours on the metric cells
    assert "0.83" in html and "<li>identity_similarity: 0.31 &lt; 0.5 (fail)</li>" in html
    assert re.search(r'<td class="num v-fail" data-sort="0.31" title="fail">0.31</td>', html)
    # one distribution per numeric metric (not the codec, not the all-None lse_d), thresholds in the text
    plotted = re.findall(r'alt="distribution of (\w+)"', html)
    assert "identity_similarity" in plotted and "codec" not in plotted and "lse_d" not in plotted
    assert "has_audio" not in plotted  # booleans are not distributions


def test_synthetic_weights_banner_and_missing_batch_record(tmp_path: Path) -> None:
    root = make_batch(tmp_path, "synthetic-b", weights="synthetic", with_record=False)
    html = Path(build_report(str(root))).read_text()
    assert "SYNTHETIC WEIGHTS" in html  # from the rows' synthetic_weights flag, without batch.json
    assert "No batch.json in this batch folder" in html and "synthetic-b" in html
    assert "not meaningful: synthetic weights" in html
    assert len(_table_ids(html)) == 5


def test_large_batch_caps_embedded_media() -> None:
    source, strip = _source_and_strip()
    items = [
        {
            "row": i,
            "id": f"clip-{i:03d}",
            "status": "succeeded",
            "qc_verdict": "pass",
            "video_uri": "v",
            "qc": _qc_record("pass", 0.8, 0.5, [], "official"),
            "source_jpg": source,
            "strip_jpg": strip,
        }
        for i in range(6)
    ]
    items[4]["qc"] = _qc_record("fail", 0.2, 0.5, ["identity_similarity: 0.2 < 0.5 (fail)"], "official")
    items[4]["qc_verdict"] = "fail"
    items[5].update(qc=None, qc_verdict="fail", qc_problems='["longest_frozen_run: 30 > 12 (fail)"]')
    html = render_report_html({"batch_id": "big"}, items, max_item_media=2)
    assert html.count('<tr class="item ') == 6
    assert html.count('<article class="card') == 2 and html.count('alt="source photo"') == 2
    assert "for the first 2\n  of 6 items" in html
    assert _table_ids(html)[:2] == ["clip-004", "clip-005"]  # the failures are among the embedded ones
    assert "longest_frozen_run: 30 &gt; 12 (fail)" in html  # from the row when there is no qc.json


def test_format_number() -> None:
    assert format_number(192.82986845999972) == "193"
    assert format_number(0.123456) == "0.123" and format_number(-0.0004567) == "-4.57e-04"
    assert format_number(1234.5) == "1230" and format_number(25.0) == "25" and format_number(25) == "25"
    assert format_number(True) == "yes" and format_number(None) == "–" and format_number(math.nan) == "nan"
    assert format_number("h264") == "h264"


def test_plots_are_thread_safe() -> None:
    """The module lock serialises matplotlib: the same curve drawn from 6 threads at once is identical."""
    qc = _qc_record("pass", 0.8, 0.5, [], "official", lag=2)
    expected = report._sync_curve(qc)
    results: list[str | None] = []
    threads = [threading.Thread(target=lambda: results.append(report._sync_curve(qc))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert expected and expected.startswith("data:image/png;base64,")
    assert results == [expected] * 6


# ---------------------------------------------------------------------------------------------------------
# The index


def test_build_index_lists_batches_newest_first(tmp_path: Path) -> None:
    make_batch(tmp_path, "night-old", created_at="2025-06-01T02:00:00+00:00")
    new = make_batch(tmp_path, "night-new", created_at="2025-06-02T02:00:00Z")
    record = json.loads((new / "batch.json").read_text())
    record["rows"], record["counts"]["qc_pass"] = 4, 3
    (new / "batch.json").write_text(json.dumps(record))
    build_report(str(new))  # only the new batch has its report
    (tmp_path / "cache" / "face").mkdir(parents=True)  # not a batch
    uri = build_index(str(tmp_path))
    assert uri == str(tmp_path / "index.html")
    html = Path(uri).read_text()
    assert "http://" not in html and "https://" not in html
    rows = re.findall(r'<tr class="batch".*?</tr>', html, re.S)
    assert len(rows) == 2
    assert 'href="night-new/report.html"' in rows[0] and "75.0 %" in rows[0]  # 3 of 4 rows passed QC
    assert "night-old" in rows[1] and "(no report)" in rows[1] and "20.0 %" in rows[1]  # 1 of 5
    assert "2025-06-02 02:00 UTC" in rows[0] and 'alt="QC pass rate per batch over time"' in html


# ---------------------------------------------------------------------------------------------------------
# In a real browser


def _chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip(
        "headless Chromium not installed (Debian package `chromium`; `make setup` installs it as root)"
    )


def _open_in_chromium(url: str, tmp: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """Load ``url`` headless; returns the DOM after the page's scripts ran and its console messages.

    With ``--enable-logging=stderr`` every console message (log, warn, error, uncaught exceptions, CSP
    violations such as a blocked network request) is one ``:CONSOLE`` line on stderr, whatever its level;
    the report itself never logs, so any such line is a failure.
    """
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
        "--window-size=1400,1000",
        "--dump-dom",
    ]
    if screenshot is not None:
        command.append(f"--screenshot={screenshot}")
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def test_console_error_detection_works(tmp_path: Path) -> None:
    """The detector the report test relies on does see a page's console errors."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><body><script>console.error('deliberate-error-7')</script></body>")
    _, console = _open_in_chromium(page.as_uri(), tmp_path)
    assert any("deliberate-error-7" in line for line in console), console


def test_report_in_headless_chromium(built: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = built
    shot = tmp_path / "report.png"
    dom, console = _open_in_chromium((root / "report.html").as_uri(), tmp_path, screenshot=shot)
    assert console == []  # no errors, no blocked requests, nothing logged
    assert 'data-ready="1"' in dom  # our script ran (its CSP hash matched)
    assert len(re.findall(r'<tr class="item ', dom)) == 5
    assert "5 of 5 items shown" in dom
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1000, 1400)
    assert pixels.std() > 20  # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # photos, plots and colours, not just text
    if os.environ.get("SADTALKER_REPORT_SCREENSHOT"):  # keep a sample for the docs / a reviewer
        shutil.copyfile(shot, os.environ["SADTALKER_REPORT_SCREENSHOT"])


def test_report_filter_and_sort_in_headless_chromium(built: tuple[Path, str], tmp_path: Path) -> None:
    """The table's script filters and sorts: the shareable view ``#verdict=attention&sort=-row`` hides the
    passing row and orders the rest by row number, descending."""
    root, _ = built
    dom, console = _open_in_chromium(
        (root / "report.html").as_uri() + "#verdict=attention&sort=-row", tmp_path
    )
    assert console == []
    rows = re.findall(
        r'<tr class="item cat-(\w+)" data-idx="\d+" data-category="\w+" '
        r'data-search="[^"]*"( hidden="")?>',
        dom,
    )
    assert [(cat, bool(hidden)) for cat, hidden in rows] == [
        ("error", False),
        ("error", False),
        ("fail", False),
        ("warn", False),
        ("pass", True),
    ]
    assert _table_ids(dom)[:4] == [HOSTILE_ID, "render-04", "fail-03", "warn-02"]  # rows 4, 3, 2, 1
    assert "4 of 5 items shown" in dom


def test_report_and_index_through_fsspec(tmp_path: Path) -> None:
    """Nothing assumes a local disk: the same batch in fsspec's memory store (non-atomic-PUT protocol)."""
    import fsspec

    root = make_batch(tmp_path, "nightly-m")
    fs = fsspec.filesystem("memory")
    for path in root.rglob("*"):
        if path.is_file():
            fs.pipe_file(f"/reports-bkt/out/nightly-m/{path.relative_to(root).as_posix()}", path.read_bytes())
    try:
        uri = build_report("memory://reports-bkt/out/nightly-m")
        assert uri == "memory://reports-bkt/out/nightly-m/report.html"
        html = fs.cat_file("/reports-bkt/out/nightly-m/report.html").decode()
        assert len(_table_ids(html)) == 5 and html.count('alt="source photo"') == 3
        index = build_index("memory://reports-bkt/out")
        assert 'href="nightly-m/report.html"' in fs.cat_file(index.split("://", 1)[1]).decode()
    finally:
        fs.rm("/reports-bkt", recursive=True)
