"""Reference videos (``ref_eyeblink`` / ``ref_pose``) and a video given as the source photo (issue 13).

Clips are made here: 8-12 frames of tests/data/portrait.png shifted / rotated with OpenCV, encoded with
ffmpeg. Synthetic weights (tests): ReconNet's outputs are pseudo-random, so the *angles* it regresses do not
follow the motion; the crop-alignment dims (70-72: scale, t.x, t.y from the per-frame landmarks) do, and
the pose reference's rows reach the predicted pose exactly as its motion relative to its first frame.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from sadtalker.coeffs.generate import tile_rows
from sadtalker.coeffs.reference import (
    REFERENCE_SIZE,
    ReferenceCoefficients,
    fill_missing,
    reference_coefficients,
    reference_kind,
    video_reference_coefficients,
)
from sadtalker.errors import InputError, NoFaceError, ReferenceVideoError
from sadtalker.options import RenderOptions
from sadtalker.video.ffmpeg import ffmpeg_exe

DATA = Path(__file__).parent / "data"
PORTRAIT = DATA / "portrait.png"
SHIFT = 3.0  # pixels per frame, to the right


def write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    """Encode BGR frames (all one size) as H.264 at 25 fps (``-f mp4`` whatever the name)."""
    height, width = frames[0].shape[:2]
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}"]
        + ["-r", "25", "-i", "-", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", "-f", "mp4"]
        + [str(path)],
        input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames),
        check=True,
        timeout=60,
    )
    return path


def moving_frames(count: int, shift: float = SHIFT, degrees: float = 0.0) -> list[np.ndarray]:
    portrait = cv2.imread(str(PORTRAIT))
    h, w = portrait.shape[:2]
    out = []
    for f in range(count):
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees * f, 1.0)
        matrix[0, 2] += shift * f
        out.append(cv2.warpAffine(portrait, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE))
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    moving = moving_frames(12)
    grey = np.full_like(moving[0], 128)
    gappy = moving_frames(8)
    gappy[3:5] = [grey, grey]
    return {
        "moving": write_clip(folder / "moving.npz", moving),  # a video whatever its name
        "gappy": write_clip(folder / "gappy.mp4", gappy),
        "faceless": write_clip(folder / "faceless.mp4", [grey] * 6),
    }


@pytest.fixture(scope="module")
def moving_rows(clips, models) -> ReferenceCoefficients:
    return video_reference_coefficients(clips["moving"], "crop", models)


# ---- deciding by content -------------------------------------------------------------------------------


def test_reference_kind_is_decided_by_content(tmp_path: Path, clips) -> None:
    rows = np.zeros((3, 73), np.float32)
    np.savez(tmp_path / "coeffs.npz", coeff_3dmm=rows)
    (tmp_path / "coeffs.npz").rename(tmp_path / "coeffs.mp4")
    np.save(tmp_path / "rows.npy", rows)
    (tmp_path / "rows.npy").rename(tmp_path / "rows.bin")
    assert reference_kind(tmp_path / "coeffs.mp4") == "npz"
    assert reference_kind(tmp_path / "rows.bin") == "npy"
    assert reference_kind(clips["moving"]) == "video"  # named .npz
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a reference"):
        reference_kind(tmp_path / "notes.txt")


def test_fill_missing_interpolates_between_neighbours() -> None:
    a, b = np.zeros(2, np.float32), np.full(2, 3.0, np.float32)
    out, filled = fill_missing([None, a, None, None, b, None])
    assert filled == (0, 2, 3, 5)
    np.testing.assert_allclose(out[:, 0], [0, 0, 1, 2, 3, 3])


# ---- reconstruction and use ----------------------------------------------------------------------------


def test_reference_video_rows_follow_the_applied_motion(moving_rows: ReferenceCoefficients) -> None:
    rows = moving_rows.coeff_3dmm
    assert rows.shape == (12, 73) and moving_rows.filled == () and moving_rows.size == REFERENCE_SIZE
    assert np.isfinite(rows).all()
    # the face moves 3 px/frame to the right in a 256 px frame: within the first frame's fixed crop (about
    # its size, cut to 256) the aligned face's t.x rises by about that much per frame, t.y stays put
    tx, ty = rows[:, 71], rows[:, 72]
    slope = np.polyfit(np.arange(12), tx, 1)[0]
    assert 1.0 < slope < 9.0, slope
    assert np.all(np.diff(tx) > -1.0)
    assert np.ptp(ty) < 0.3 * np.ptp(tx)


def test_pose_and_blink_references_reach_the_coefficients(clips, models, moving_rows) -> None:
    """ref_pose: predicted pose + (ref_f - ref_0), tiled to the audio (29 frames from 12); ref_eyeblink:
    blink curve all zeros. Same video for both: processed once per call."""
    from sadtalker.pipeline import audio_to_coefficients, extract_face

    options = RenderOptions(seed=3)
    face = extract_face(PORTRAIT, options, models)
    plain = audio_to_coefficients(DATA / "speech.wav", face, options, models)
    video = str(clips["moving"])
    posed = audio_to_coefficients(
        DATA / "speech.wav", face, options.model_copy(update={"ref_pose": video}), models
    )
    motion = tile_rows(moving_rows.coeff_3dmm[:, 64:70], plain.num_frames)
    np.testing.assert_allclose(
        posed.coefficients[:, 64:70] - plain.coefficients[:, 64:70], motion - motion[:1], atol=1e-4
    )
    np.testing.assert_array_equal(posed.coefficients[:, :64], plain.coefficients[:, :64])
    blinked = audio_to_coefficients(
        DATA / "speech.wav",
        face,
        options.model_copy(update={"ref_eyeblink": video, "ref_pose": video}),
        models,
    )
    assert not blinked.blink.any()
    assert not np.allclose(blinked.coefficients[:, :64], plain.coefficients[:, :64])


def test_frames_without_a_face_are_filled_and_counted(clips, models) -> None:
    result = video_reference_coefficients(clips["gappy"], "crop", models)
    assert result.filled == (3, 4) and result.coeff_3dmm.shape == (8, 73)
    rows = result.coeff_3dmm
    np.testing.assert_allclose(rows[3], rows[2] + (rows[5] - rows[2]) / 3, atol=1e-4)


# ---- bad references ------------------------------------------------------------------------------------


def test_faceless_reference_video_is_a_no_face_error(clips, models) -> None:
    with pytest.raises(NoFaceError, match="no usable face in any of the 6 frames") as err:
        reference_coefficients(clips["faceless"], "crop", models)
    assert err.value.path == str(clips["faceless"])


def test_corrupt_and_empty_references_fail_clearly(tmp_path: Path, clips, models) -> None:
    data = clips["gappy"].read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # the moov box (at the end) is gone
    with pytest.raises(ReferenceVideoError, match="cannot read the reference video"):
        reference_coefficients(truncated, "crop", models)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(data[:32] + bytes(range(256)) * 8)  # an MP4 header, then noise
    with pytest.raises(ReferenceVideoError):
        reference_coefficients(garbage, "crop", models)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty reference file"):
        reference_coefficients(empty, "crop", models)


# ---- the batch cache -----------------------------------------------------------------------------------


def test_reference_is_processed_once_for_rows_and_batches(tmp_path: Path, clips, models, monkeypatch) -> None:
    """Three rows sharing one reference video (as ref_pose, and as ref_eyeblink of two), in one batch and
    then in a second batch: the video is reconstructed once; the coefficient keys name its content."""
    import sadtalker.pipeline as pl
    import tasks.coeffs as coeffs_tasks
    from manifests.schema import ManifestRow
    from sadtalker.loader import Models
    from sadtalker.paths import BatchPaths
    from tasks.records import StageContext, StoredFace

    calls: list[str] = []
    real = pl.reference_video_coefficients

    def counting(path, options, models=None):
        calls.append(Path(path).name)
        return real(path, options, models)

    monkeypatch.setattr(pl, "reference_video_coefficients", counting)
    monkeypatch.setattr(Models, "shared", lambda policy=None: models)
    face = pl.extract_face(PORTRAIT, RenderOptions(), models)
    face_file = tmp_path / "face.npz"
    face.save(face_file)
    record = StoredFace("r", "0" * 64, "f" * 64, str(face_file), str(face_file), 1, False, 0.0)
    video = str(clips["moving"])
    rows = [
        ManifestRow(id="r1", image=str(PORTRAIT), audio=str(DATA / "speech.wav"), ref_pose=video),
        ManifestRow(id="r2", image=str(PORTRAIT), audio=str(DATA / "speech.wav"), ref_pose=video, seed=1),
        ManifestRow(
            id="r3", image=str(PORTRAIT), audio=str(DATA / "speech.wav"), ref_pose=video, ref_eyeblink=video
        ),
    ]
    body = coeffs_tasks.coefficients_task.fn
    keys = []
    for batch in ("b1", "b2"):
        ctx = StageContext(paths=BatchPaths.create(str(tmp_path / "out"), batch), device="cpu")
        keys.append([body(row, record, ctx).key for row in rows])
    assert calls == ["moving.npz"]  # one reconstruction for 6 row-runs (7 uses)
    assert len(list((tmp_path / "out" / "cache" / "refs").glob("*.npz"))) == 1
    assert keys[0] == keys[1] and len(set(keys[0])) == 3

    # the key follows the video's content: another clip under the same name is processed anew
    other = tmp_path / "moving.npz"
    write_clip(other, moving_frames(10, shift=-SHIFT))
    ctx = StageContext(paths=BatchPaths.create(str(tmp_path / "out"), "b3"), device="cpu")
    changed = body(rows[0].model_copy(update={"ref_pose": str(other)}), record, ctx).key
    assert changed != keys[0][0] and calls == ["moving.npz", "moving.npz"]


# ---- a video as the source -----------------------------------------------------------------------------


@pytest.mark.parametrize("preprocess", ["crop", "full"])
def test_video_source_is_its_first_frame(tmp_path: Path, clips, models, preprocess: str) -> None:
    from sadtalker.face.image import load_image
    from sadtalker.pipeline import extract_face, qc_source_image

    video = clips["gappy"]
    first = tmp_path / "first.png"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-frames:v", "1", str(first)],
        check=True,
        timeout=60,
    )
    loaded = load_image(video)
    assert loaded.format == "video"
    assert np.abs(loaded.pixels.astype(int) - load_image(first).pixels.astype(int)).max() <= 2
    options = RenderOptions(preprocess=preprocess)
    from_video = extract_face(video, options, models)
    from_png = extract_face(first, options, models)
    assert from_video.crop == from_png.crop
    assert np.abs(from_video.source_image.astype(int) - from_png.source_image.astype(int)).max() <= 2
    np.testing.assert_allclose(from_video.coeff_3dmm, from_png.coeff_3dmm, atol=0.05)
    if preprocess == "full":  # paste-back background: the first frame, at the video's size
        assert qc_source_image(from_video, video).shape == loaded.pixels.shape
