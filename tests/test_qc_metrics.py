"""QC metrics mean something: a constructed GOOD talking video passes every check, and each defect is caught
by the metric meant for it (tests/qc_media.py builds them without model weights)."""

from __future__ import annotations

import json
import threading
import types

import numpy as np
import pytest
from qc_media import FRAMES, SHIFT_FRAMES, build_qc_media

from sadtalker.qc import (
    DEFAULT_THRESHOLDS,
    QC_PROTOCOL,
    FrameStats,
    QCReport,
    Threshold,
    check_video,
    parse_threshold_overrides,
    resolve_thresholds,
)

SAMPLES = 8  # sampled frames per check in these tests (16 by default): identity costs ~0.2 s per frame


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    return build_qc_media(tmp_path_factory.mktemp("qc_media"))


def good_coefficients(media) -> np.ndarray:
    """(75, 70) coefficients of a healthy clip: expression energy follows the speech, the head sways."""
    rng = np.random.default_rng(1)
    t = np.arange(FRAMES)
    coefficients = np.zeros((FRAMES, 70), np.float32)
    level = media.envelope / media.envelope.max()
    coefficients[:, :64] = np.outer(level, rng.normal(size=64)) + rng.normal(scale=0.02, size=(FRAMES, 64))
    coefficients[:, 64] = np.radians(3) * np.sin(2 * np.pi * t / 40)  # yaw
    coefficients[:, 65] = np.radians(1.5) * np.sin(2 * np.pi * t / 23)  # pitch
    return coefficients


_REPORTS: dict[str, QCReport] = {}


@pytest.fixture(scope="session")
def report(media):
    """``report(variant)``: the QC record of one constructed video (measured once per session)."""

    def get(variant: str) -> QCReport:
        if variant not in _REPORTS:
            _REPORTS[variant] = check_video(
                media.videos[variant],
                media.portrait,
                media.speech,
                expected_frames=FRAMES,
                max_samples=SAMPLES,
                syncnet=False,
            )
        return _REPORTS[variant]

    return get


def test_constructed_mouth_follows_the_speech(media):
    # dlib's inner-lip opening on the drawn frames tracks the gap we drew from the speech RMS.
    assert media.landmark_corr > 0.9, media.landmark_corr
    assert media.gaps.max() > 8 and (media.gaps < 0.5).sum() >= 10  # clearly open and clearly shut


def test_good_video_passes_every_check(media):
    stats = FrameStats()
    stats.update_float(np.zeros((FRAMES, 3, 4, 4), np.float32))
    qc = check_video(
        media.videos["good"],
        media.portrait,
        media.speech,
        coefficients=good_coefficients(media),
        expected_frames=FRAMES,
        upstream=stats.to_dict(),
        max_samples=SAMPLES,
        syncnet=False,
    )
    flagged = {n: (m.value, m.verdict) for n, m in qc.metrics.items() if m.verdict not in ("pass", "info")}
    assert flagged == {"lse_d": (None, "skipped"), "lse_c": (None, "skipped")}  # SyncNet off here
    assert qc.verdict == "pass" and qc.problems == []
    assert qc.value("sync_offset_frames") == 0 and qc.value("sync_correlation") > 0.8
    assert qc.value("identity_similarity") > 0.95 and qc.value("sharpness_ratio") > 0.6
    assert qc.value("longest_frozen_run") <= 2 and qc.value("frames") == FRAMES
    assert qc.value("pose_std_deg") == pytest.approx(np.mean([3 / 2**0.5, 1.5 / 2**0.5, 0]), rel=0.1)
    assert qc.value("expression_speech_corr") > 0.9

    record = json.loads(json.dumps(qc.to_dict()))  # plain JSON, the contract's layout
    assert record["protocol"] == QC_PROTOCOL == "sadtalker-qc/2" and record["weights"] == "unknown"
    assert set(record) >= {"verdict", "problems", "metrics", "series", "video", "models", "seconds"}
    metric = record["metrics"]["identity_similarity"]
    assert set(metric) == {"value", "verdict", "threshold", "unit", "group", "note"}
    assert (
        metric["threshold"] == {"warn": 0.93, "fail": 0.9, "direction": "min"}
        and metric["group"] == "identity"
    )
    series = record["series"]
    assert len(series["mouth_opening"]) == len(series["speech_envelope"]) == FRAMES
    assert series["fps"] == 25.0 and series["best_lag_frames"] == 0
    assert record["video"]["frames"] == FRAMES and record["video"]["pix_fmt"] == "yuv420p"
    # The report's pictures: the source face and a strip of ~6 output frames, 96 px high, as JPEG.
    assert qc.strip.shape[0] == 96 and qc.strip.shape[1] == 6 * 96 and qc.source_thumb.shape[0] == 96
    assert qc.strip_jpeg()[:2] == b"\xff\xd8" and qc.source_jpeg()[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    "variant, metric, value_check",
    [
        ("frozen", "longest_frozen_run", lambda v: v > 25),  # 36 repeated frames (x264 refines the first few)
        ("muted", "has_audio", lambda v: v is False),
        ("missing_audio", "has_audio", lambda v: v is False),
        ("shifted", "sync_offset_frames", lambda v: abs(v - SHIFT_FRAMES) <= 1),
        ("blurred", "sharpness_ratio", lambda v: v < 0.2),
        ("other_face", "identity_similarity", lambda v: v < 0.9),
        ("noise_face", "face_presence", lambda v: v < 0.7),
        ("truncated", "frames", lambda v: v < FRAMES),
    ],
)
def test_each_defect_is_caught_by_its_metric(report, variant, metric, value_check):
    good, qc = report("good"), report(variant)
    assert good.verdict == "pass", good.problems
    assert qc.verdict == "fail", qc.to_dict()["metrics"]
    assert qc.metrics[metric].verdict == "fail" and value_check(qc.value(metric)), qc.metrics[metric]
    assert any(p.startswith(f"{metric}:") for p in qc.problems), qc.problems
    assert good.metrics[metric].verdict == "pass"  # and the good video is not flagged by it


def test_defects_do_not_trip_unrelated_metrics(report):
    # The identity of a blurred face and the sync of a clip with another face stay good: each metric
    # answers its own question.
    assert report("blurred").value("identity_similarity") > 0.9
    assert report("blurred").value("sharpness_ratio") < report("good").value("sharpness_ratio") / 3
    assert report("other_face").metrics["sync_correlation"].verdict == "pass"
    assert report("shifted").value("sync_correlation") > 0.8  # the lips move with the speech, just late
    assert report("truncated").metrics["frame_count_error"].verdict == "fail"


def test_an_unreadable_file_fails_without_an_exception(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    qc = check_video(junk, syncnet=False)
    assert qc.verdict == "fail" and qc.metrics["frames"].verdict == "fail"
    assert qc.problems[0].startswith("frames: ") and "unreadable video" in qc.problems[0]
    assert all(m.verdict == "skipped" for n, m in qc.metrics.items() if n != "frames")


def test_threshold_overrides_change_verdicts_and_synthetic_weights_do_not_fail(media):
    # Two checks at once from two threads: the dlib models are shared and locked.
    results: dict[str, QCReport] = {}

    def run(name, **kwargs):
        results[name] = check_video(
            media.videos["other_face"], media.portrait, max_samples=4, syncnet=False, **kwargs
        )

    threads = [
        threading.Thread(
            target=run, args=("lenient",), kwargs={"thresholds": ["identity_similarity.fail=0.5"]}
        ),
        threading.Thread(target=run, args=("synthetic",), kwargs={"weights": "synthetic"}),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lenient, synthetic = results["lenient"], results["synthetic"]
    assert lenient.value("identity_similarity") == pytest.approx(synthetic.value("identity_similarity"))
    # 0.82 is under the default warn limit (0.93) but above the overridden fail limit: warn, not fail.
    assert lenient.metrics["identity_similarity"].verdict == "warn" and lenient.verdict == "warn"
    assert lenient.metrics["identity_similarity"].threshold == Threshold(0.93, 0.5, "min")
    # Synthetic weights: face metrics are computed and shown, marked not meaningful, and never fail the row.
    for name in (
        "face_presence",
        "face_in_region",
        "identity_similarity",
        "sharpness_ratio",
        "sync_correlation",
    ):
        metric = synthetic.metrics[name]
        assert metric.verdict == "not_meaningful" and metric.value is not None, (name, metric)
        assert metric.note.startswith("not meaningful: synthetic weights")
    assert synthetic.verdict == "pass" and synthetic.weights == "synthetic"
    assert synthetic.metrics["has_audio"].verdict == "pass"  # structural checks keep their verdicts


def test_synthetic_weights_keep_structural_failures(media):
    qc = check_video(
        media.videos["truncated"], media.portrait, weights="synthetic", max_samples=2, syncnet=False
    )
    assert qc.verdict == "fail" and qc.metrics["frames"].verdict == "fail"


def test_threshold_parsing():
    assert parse_threshold_overrides(["identity_similarity.fail=0.5", "lse_d.warn=none"]) == {
        "identity_similarity": {"fail": 0.5},
        "lse_d": {"warn": None},
    }
    assert parse_threshold_overrides({"sync_correlation": {"warn": "0.4"}}) == {
        "sync_correlation": {"warn": 0.4}
    }
    merged = resolve_thresholds({"beat_align": {"warn": 0.2}, "pose_std_deg": {"warn": None}})
    assert merged["beat_align"] == Threshold(0.2, None, "min")  # an info metric can be given limits
    assert "pose_std_deg" not in merged  # its only limit removed: info
    assert merged["identity_similarity"] == DEFAULT_THRESHOLDS["identity_similarity"]
    for bad in (
        ["nope.fail=1"],
        ["identity_similarity.error=1"],
        ["identity_similarity=1"],
        ["frames.fail=x"],
    ):
        with pytest.raises(ValueError):
            parse_threshold_overrides(bad)
    with pytest.raises(ValueError, match="at least as strict"):
        resolve_thresholds(["identity_similarity.fail=0.95"])  # fail above warn (0.93): nonsense
    assert Threshold(1, 2, "max").verdict(1.0) == "pass" and Threshold(1, 2, "max").verdict(2.5) == "fail"
    assert Threshold(0.9, 0.7, "min").verdict(0.8) == "warn"


def test_qc_cli_json_and_exit_codes(media, capsys, tmp_path):
    from sadtalker.cli import main

    image = str(media.portrait)
    assert main(["qc", str(media.videos["good"]), "--image", image, "--samples", "4"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verdict"] == "pass"
    assert all({"value", "threshold", "verdict"} <= set(m) for m in record["metrics"].values())
    assert record["metrics"]["sync_offset_frames"]["value"] == 0

    code = main(["qc", str(media.videos["shifted"]), "--image", image, "--samples", "2"])
    record = json.loads(capsys.readouterr().out)
    assert code == 1 and record["verdict"] == "fail"
    assert record["metrics"]["sync_offset_frames"]["verdict"] == "fail"

    assert main(["qc", str(tmp_path / "absent.mp4"), "--image", image]) == 2
    assert main(["qc", str(media.videos["good"]), "--threshold", "bogus.fail=1"]) == 2
    assert main(["qc", str(media.videos["good"]), "--image", str(tmp_path / "absent.png")]) == 2
    capsys.readouterr()


def test_frame_spill_reads_back_what_was_appended_and_refuses_other_shapes():
    from sadtalker.qc.check import _FrameSpill

    spill = _FrameSpill((4, 4, 3))
    assert spill.array().shape == (0, 4, 4, 3)
    frames = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    for frame in frames:
        spill.append(frame)
    np.testing.assert_array_equal(spill.array(), frames)
    with pytest.raises(ValueError, match="expected a uint8"):
        spill.append(np.zeros((4, 5, 3), np.uint8))
    spill.close()


def test_syncnet_hook(media):
    seen = {}

    def lse_metrics(face_frames, audio):
        seen["frames"], seen["audio"] = face_frames.shape, audio.shape
        seen["kind"], seen["first"] = type(face_frames), np.array(face_frames[0])
        return {"lse_d": 7.0, "lse_c": 2.5, "offset_frames": -5}

    hook = types.SimpleNamespace(
        lse_metrics=lse_metrics, find_syncnet_weights=lambda: ("/w/syncnet_v2.model", "")
    )
    qc = check_video(media.videos["shifted"], max_samples=2, syncnet=hook)
    assert seen["frames"][0] == FRAMES and seen["frames"][-1] == 3 and seen["audio"][0] >= FRAMES * 640 - 640
    assert issubclass(seen["kind"], np.memmap)  # the loose crops wait on disk, not in memory
    assert qc.value("lse_d") == 7.0 and qc.metrics["lse_d"].verdict == "pass"
    assert qc.metrics["lse_c"].verdict == "fail"  # 2.5 < 3: out of sync
    assert "+5 frames" in qc.metrics["lse_c"].note  # syncnet_python's -5 in our sign convention
    assert qc.models["syncnet"] == "syncnet_v2.model"

    from sadtalker.qc import syncnet

    lazy = types.SimpleNamespace(
        FaceCrops=syncnet.FaceCrops,
        lse_metrics=lse_metrics,
        find_syncnet_weights=lambda: ("/w/syncnet_v2.model", ""),
    )
    check_video(media.videos["shifted"], max_samples=2, syncnet=lazy)
    assert seen["kind"] is syncnet.FaceCrops and seen["frames"] == (FRAMES, 224, 224, 3)
    assert seen["first"].shape == (224, 224, 3) and seen["first"].dtype == np.uint8

    absent = types.SimpleNamespace(
        lse_metrics=lse_metrics, find_syncnet_weights=lambda: (None, "no weights: fetch")
    )
    qc = check_video(media.videos["good"], max_samples=1, syncnet=absent)
    assert qc.metrics["lse_d"].verdict == "skipped" and qc.metrics["lse_d"].note == "no weights: fetch"


def test_frame_stats_count_nonfinite_float_frames():
    import torch

    stats = FrameStats()
    chunk = np.zeros((4, 3, 8, 8), np.float32)
    chunk[1, 0, 0, 0] = np.nan
    chunk[3, 2, 5, 5] = np.inf
    stats.update_float(chunk)
    stats.update_float(torch.zeros(2, 3, 8, 8).index_fill_(0, torch.tensor([1]), float("nan")))
    assert (stats.float_frames, stats.nonfinite_frames) == (6, 3)
    again = FrameStats.from_dict(stats.to_dict())
    assert again.nonfinite_frames == 3 and again.float_frames == 6


@pytest.mark.parametrize("seconds", [0.3, 9.0])
def test_audio_beats_in_chunks_are_librosas_whole_clip_beats(seconds: float) -> None:
    """The spectrogram and the tempo computed a few frames at a time (flat memory for long clips) give
    librosa's whole-clip spectrogram (within float rounding), tempo and beats, whatever the chunk size."""
    import librosa

    from sadtalker.qc import motion

    sr, hop, rng = 16_000, 640, np.random.default_rng(3)
    t = np.arange(int(sr * seconds)) / sr
    gate = np.sin(2 * np.pi * 1.9 * t) > 0.3  # syllable-like bursts
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * gate + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    whole = librosa.power_to_db(librosa.feature.melspectrogram(y=audio, sr=sr, n_fft=2048, hop_length=hop))
    envelope = librosa.onset.onset_strength(y=audio, sr=sr, hop_length=hop)
    tempo, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=sr, hop_length=hop)
    if len(beats) == 0:
        beats = librosa.onset.onset_detect(onset_envelope=envelope, sr=sr, hop_length=hop)
    assert len(beats) >= (1 if seconds < 1 else 8)  # a short clip: few beats or onsets
    for chunk in (3, 64, motion.ONSET_CHUNK_FRAMES):
        spectrum = motion.mel_power_db(audio, sr, hop, chunk)
        assert spectrum.shape == whole.shape
        np.testing.assert_allclose(spectrum, whole, atol=1e-4, rtol=0)
        assert motion.global_tempo(envelope, sr, hop, chunk) == pytest.approx(float(np.ravel(tempo)[0]))
        np.testing.assert_array_equal(motion.audio_beats(audio, chunk_frames=chunk), beats)


def test_audio_beats_of_silence_are_none() -> None:
    from sadtalker.qc import motion

    assert motion.audio_beats(np.zeros(32_000, np.float32)).size == 0


def test_motion_metrics_on_constructed_coefficients():
    from sadtalker.qc import motion
    from sadtalker.qc.sync import speech_envelope

    frames, rng = 150, np.random.default_rng(0)
    audio = np.zeros(frames * 640, np.float32)
    for beat in range(6, frames, 12):  # a click every 0.48 s
        audio[beat * 640 : beat * 640 + 400] = rng.normal(0, 0.5, 400) * np.exp(-np.arange(400) / 80)
    beats = motion.audio_beats(audio)
    assert len(beats) >= 8 and set(np.diff(beats)) <= {11, 12, 13}

    def nodding(shift: int) -> np.ndarray:
        """Yaw whose speed falls to 0 every 12 frames, ``shift`` frames after each click."""
        speed = 1 - np.cos(2 * np.pi * (np.arange(frames) - 6 - shift) / 12)
        c = np.zeros((frames, 70), np.float32)
        c[:, 64] = np.cumsum(speed) * 0.002
        return c

    # Speed at t is angle[t+1] - angle[t] (Bailando's indexing): shift 1 puts the minima on the clicks.
    aligned = motion.beat_align_score(beats, motion.motion_beats(nodding(1)))
    off_beat = motion.beat_align_score(beats, motion.motion_beats(nodding(6)))
    assert aligned > 0.9 and off_beat < 0.05

    still = np.zeros((frames, 70), np.float32)
    assert motion.pose_std_deg(still) == 0.0 and motion.motion_beats(still).size == 0
    swaying = still.copy()
    swaying[:, 66] = np.radians(2) * np.sin(np.arange(frames) / 5)  # roll, 2 degrees
    assert motion.pose_std_deg(swaying) == pytest.approx(2 / 2**0.5 / 3, rel=0.05)

    envelope = speech_envelope(audio, frames, 25)
    talking = still.copy()
    talking[:, :64] = np.outer(envelope / envelope.max(), rng.normal(size=64))
    assert motion.expression_speech_corr(talking, envelope) > 0.95
    talking[:, :64] = rng.normal(scale=0.1, size=(frames, 64))  # expression unrelated to the speech
    assert abs(motion.expression_speech_corr(talking, envelope)) < 0.3


def test_presence_with_the_projects_landmarker(media):
    from sadtalker.face.landmarks import make_landmarker

    qc = check_video(media.videos["good"], max_samples=2, syncnet=False, landmarker=make_landmarker("dlib"))
    assert qc.value("face_presence") == 1.0 and qc.metrics["face_in_region"].verdict == "pass"
    assert qc.models["landmarker"] == "dlib"


def test_speech_envelope_is_each_frames_rms_in_float64():
    """Frame i's RMS over samples [i·hop, (i+1)·hop) (hop = 640 at 16 kHz / 25 fps), 0 past the end; float32
    input is summed in float64 (1e-4 steps would lose digits in float32 over 640 samples)."""
    from sadtalker.qc.sync import speech_envelope

    audio = np.concatenate([np.full(640, 0.5, np.float32), np.tile(np.float32([0.3, -0.3]), 320)])
    audio = np.concatenate([audio, np.float32(1e-4) * np.arange(640, dtype=np.float32)])
    envelope = speech_envelope(audio, frames=5, fps=25.0)
    tail = np.float32(1e-4) * np.arange(640, dtype=np.float32)
    expected = [0.5, 0.3, np.sqrt(np.mean(tail.astype(np.float64) ** 2)), 0.0, 0.0]
    assert envelope.dtype == np.float64
    np.testing.assert_allclose(envelope, expected, rtol=1e-7, atol=0)
