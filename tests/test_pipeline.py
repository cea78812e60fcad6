"""The one-pair path end to end on synthetic weights (real networks, tiny clip)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sadtalker.cli import main as cli_main
from sadtalker.options import RenderOptions
from sadtalker.pipeline import audio_to_coefficients, extract_face, render_video
from sadtalker.records import Coefficients, FaceRecord
from sadtalker.video import probe


@pytest.fixture(scope="module")
def face(models, test_data) -> FaceRecord:
    return extract_face(test_data / "portrait.png", RenderOptions(), models)


@pytest.fixture(scope="module")
def coeffs(models, face, short_speech) -> Coefficients:
    return audio_to_coefficients(short_speech, face, RenderOptions(seed=3), models)


def test_face_record(face):
    assert face.source_image.shape == (256, 256, 3) and face.source_image.dtype == np.uint8
    assert face.coeff_3dmm.shape == (1, 73) and np.isfinite(face.coeff_3dmm).all()
    assert face.full_coeff.shape == (1, 257)
    assert face.num_faces == 1 and face.backend == "dlib"


def test_records_round_trip(tmp_path, face, coeffs):
    face.save(tmp_path / "face.npz")
    again = FaceRecord.load(tmp_path / "face.npz")
    np.testing.assert_array_equal(again.coeff_3dmm, face.coeff_3dmm)
    np.testing.assert_array_equal(again.source_image, face.source_image)
    assert again.crop_record() == face.crop_record()
    coeffs.save(tmp_path / "coeffs.npz")
    assert Coefficients.load(tmp_path / "coeffs.npz").num_frames == coeffs.num_frames


def test_coefficients_are_seeded(models, face, coeffs, short_speech):
    assert coeffs.coefficients.shape == (7, 70)
    again = audio_to_coefficients(short_speech, face, RenderOptions(seed=3), models)
    np.testing.assert_array_equal(again.coefficients, coeffs.coefficients)
    other = audio_to_coefficients(short_speech, face, RenderOptions(seed=4), models)
    assert not np.array_equal(other.coefficients[:, 64:], coeffs.coefficients[:, 64:])


@pytest.mark.parametrize(
    "seconds, frames",
    [
        (0.52, 13),  # 3 full batches of 4 and a partial one: ~3 min of CPU rendering
        pytest.param(1.176, 29, marks=pytest.mark.slow, id="one-second"),  # all of speech.wav: ~6 min
    ],
)
def test_render_writes_a_playable_video(tmp_path, models, face, test_data, speech_prefix, seconds, frames):
    """Speech rendered at 256 px as a user would run it: frame count, fps, AAC audio, duration."""
    audio = speech_prefix(tmp_path / "speech.wav", seconds)
    clip = audio_to_coefficients(audio, face, RenderOptions(), models)
    assert clip.num_frames == frames
    out = tmp_path / "clip.mp4"
    options = RenderOptions(batch_size=4)
    result = render_video(face, clip, test_data / "portrait.png", audio, out, options, models)
    info = probe(out)
    assert info.frames == frames and info.fps == 25
    assert info.has_audio and info.audio_codec == "aac"
    assert abs(info.duration - seconds) <= 0.04  # within one frame of the audio
    assert result.synthetic_weights and result.qc is None  # the full QC runs on the file afterwards
    assert result.frame_stats["frames"] == result.frame_stats["float_frames"] == frames
    assert result.frame_stats["nonfinite_frames"] == 0
    # crop mode: the crop box's aspect at 256 px wide (portrait.png's crop is 256 x 246)
    assert (result.width, result.height, result.duration) == (info.width, info.height, frames / 25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "speech.wav"]


def test_interrupted_render_leaves_nothing(
    tmp_path, models, face, coeffs, test_data, short_speech, monkeypatch
):
    from sadtalker.render.animate import FaceAnimator

    real_animate = FaceAnimator.animate

    def dies_after_first_chunk(self, *args, **kwargs):
        chunks = real_animate(self, *args, **kwargs)
        yield next(chunks)
        raise KeyboardInterrupt("worker stopped")

    monkeypatch.setattr(FaceAnimator, "animate", dies_after_first_chunk)
    out = tmp_path / "clip.mp4"
    with pytest.raises(KeyboardInterrupt):
        render_video(face, coeffs, test_data / "portrait.png", short_speech, out, RenderOptions(), models)
    assert list(tmp_path.iterdir()) == []


def test_cli_full_mode_pastes_back_into_the_photo(tmp_path, test_data, speech_prefix, capsys):
    audio = speech_prefix(tmp_path / "two_frames.wav", 0.08)
    out = tmp_path / "full.mp4"
    code = cli_main(["render", "--image", str(test_data / "portrait.png"), "--audio", str(audio)]
                    + ["--out", str(out), "--preprocess", "full", "--still", "--quiet"])  # fmt: skip
    assert code == 0
    info = probe(out)
    assert (info.width, info.height) == (256, 256)  # the original photo's size
    assert info.frames == 2
    # The clip's QC record beside it (full QC on the written file; synthetic weights: face metrics are
    # shown but not meaningful, so only structural checks can fail the clip).
    record = json.loads((tmp_path / "full.qc.json").read_text())
    assert record["protocol"] == "sadtalker-qc/2" and record["weights"] == "synthetic"
    assert record["metrics"]["frames"]["value"] == 2 and record["metrics"]["frame_count_error"]["value"] == 0
    assert record["metrics"]["nonfinite_frames"]["verdict"] == "pass"
    assert record["metrics"]["identity_similarity"]["verdict"] in ("not_meaningful", "skipped")
    printed = capsys.readouterr().out
    assert f"QC {record['verdict'].upper()}" in printed
    assert "s/frame (cpu float32); QC" in printed  # what rendered it (", torch.compile" when compiled)


def test_cli_reports_bad_input(tmp_path, test_data, capsys):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"not audio at all")
    code = cli_main(["render", "--image", str(test_data / "portrait.png"), "--audio", str(bad)]
                    + ["--out", str(tmp_path / "x.mp4"), "--quiet"])  # fmt: skip
    assert code == 2
    assert "noise.wav" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
