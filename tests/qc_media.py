"""Talking videos for the QC tests, made without any model weights.

The GOOD video: the test portrait (tests/data/portrait.png) whose mouth opens and shuts with the speech
energy, plus a small head motion, muxed with ~3 s of speech. The mouth is opened by a warp: below the lip
line (the inner lips' dlib landmarks) the lower lip and chin are pushed down by ``gap(t) x profile(x)``
(a lens between the mouth corners, fading out towards the chin), and the opened gap is painted dark like a
mouth's inside. ``gap(t)`` follows the per-frame speech RMS. :func:`build_qc_media` checks with dlib
landmarks that the measured opening really follows ``gap(t)``.

Then one defect per variant, each meant for one metric: frozen frames, audio muted, audio missing, audio
delayed by 5 frames, blurred frames, a different face pasted in (tests/data/other_face.png), the face
replaced by noise, a truncated file. Everything is 256 x 256, 75 frames at 25 fps, encoded by the project's
own :class:`sadtalker.video.VideoWriter` (H.264 + AAC, as renders are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile

DATA = Path(__file__).resolve().parent / "data"
FPS = 25
FRAMES = 75
RATE = 16_000
HOP = RATE // FPS  # 640 samples per frame
MAX_GAP = 11.0  # px: mouth fully open at 256 px
SHIFT_FRAMES = 5
VARIANTS = (
    "good",
    "frozen",
    "muted",
    "missing_audio",
    "shifted",
    "blurred",
    "other_face",
    "noise_face",
    "truncated",
)


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def speech_track() -> np.ndarray:
    """3.0 s (75 frames) of int16 speech with clear on / off structure: 0.16 s silence, the 1.176 s test
    sentence, 0.36 s silence, the sentence again, silence to the end."""
    speech, rate = soundfile.read(DATA / "speech.wav", dtype="int16")
    assert rate == RATE
    out = np.zeros(FRAMES * HOP, dtype=np.int16)
    first = int(0.16 * RATE)
    second = first + len(speech) + int(0.36 * RATE)
    out[first : first + len(speech)] = speech
    out[second : second + len(speech)] = speech
    return out


def envelope(samples: np.ndarray) -> np.ndarray:
    """Per-frame RMS of int16 samples, ``(FRAMES,)``."""
    x = samples[: FRAMES * HOP].astype(np.float64).reshape(FRAMES, HOP) / 32768
    return np.sqrt((x * x).mean(axis=1))


def gap_curve(samples: np.ndarray) -> np.ndarray:
    """Mouth gap in pixels per frame, following the speech RMS (0 in silence, MAX_GAP at loud speech)."""
    env = envelope(samples)
    level = env / max(np.percentile(env, 90), 1e-9)
    return MAX_GAP * np.clip(level, 0, 1) ** 0.7


def _landmarks(image: np.ndarray) -> np.ndarray:
    from sadtalker.qc.face import face_models

    models = face_models()
    found = models.detect(image)
    assert found, "no face in the test photo"
    return models.landmarks(image, found[0].box)


def open_mouth(image: np.ndarray, landmarks: np.ndarray, gap: float) -> np.ndarray:
    """``image`` with its mouth opened by ``gap`` pixels at the centre (see the module docstring)."""
    if gap <= 0.05:
        return image.copy()
    height, width = image.shape[:2]
    lm = landmarks.astype(np.float64)
    # Lip line: the corners and the midpoints of the facing inner-lip points, left to right.
    line = np.array([lm[60], (lm[61] + lm[67]) / 2, (lm[62] + lm[66]) / 2, (lm[63] + lm[65]) / 2, lm[64]])
    left, right = lm[48, 0], lm[54, 0]
    chin = lm[8, 1]
    # Only the box from the lip line to below the chin, between the mouth corners, moves.
    r0, r1 = max(int(line[:, 1].min()) - 2, 0), min(int(chin) + 12, height)
    c0, c1 = max(int(left) - 1, 0), min(int(np.ceil(right)) + 2, width)
    xs, ys = np.meshgrid(np.arange(c0, c1, dtype=np.float64), np.arange(r0, r1, dtype=np.float64))
    lip = np.interp(xs, line[:, 0], line[:, 1])
    u = np.clip((xs - left) / (right - left), 0, 1)
    profile = np.sin(np.pi * u) ** 0.8  # 0 at the corners, 1 in the middle
    depth = chin + 10 - lip
    taper = np.clip(1 - (ys - lip) / np.maximum(depth, 1), 0, 1)  # 1 at the lip line, 0 under the chin
    below = ys >= lip
    shift = np.where(below, gap * profile * taper, 0.0)
    warped = cv2.remap(
        image,
        xs.astype(np.float32),
        (ys - shift).astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    ).astype(np.float64)
    # The opened gap: rows between the lip line and the lip line + the local gap, dark, soft-edged.
    inside = np.clip(np.minimum(ys - lip + 0.5, gap * profile - (ys - lip)), 0, 1) * below
    depth_shade = np.clip((ys - lip) / max(gap, 1), 0, 1)[..., None]
    colour = np.array([70.0, 25.0, 30.0]) * (1 - 0.5 * depth_shade)
    region = warped * (1 - inside[..., None]) + colour * inside[..., None]
    out = image.copy()
    out[r0:r1, c0:c1] = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    return out


def head_motion(image: np.ndarray, index: int) -> np.ndarray:
    """A small head sway (a pixel or two, under a degree) so that no two frames are identical."""
    height, width = image.shape[:2]
    angle = 0.8 * np.sin(2 * np.pi * index / 61)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    matrix[0, 2] += 1.5 * np.sin(2 * np.pi * index / 50)
    matrix[1, 2] += 1.0 * np.sin(2 * np.pi * index / 37)
    return cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def animate(image: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` frames of ``image`` talking with mouth gaps ``gaps`` (no head motion yet)."""
    landmarks = _landmarks(image)
    return np.stack([open_mouth(image, landmarks, float(g)) for g in gaps])


def face_mask(shape: tuple[int, int], box, feather: float = 6.0) -> np.ndarray:
    """``(H, W)`` float mask: 1 inside the ellipse inscribed in ``box``, feathered edges."""
    mask = np.zeros(shape, dtype=np.float32)
    x0, y0, x1, y1 = box
    centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
    axes = (int(round((x1 - x0) / 2)), int(round((y1 - y0) / 2)))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), feather)


@dataclass
class QCMedia:
    """Paths of the constructed videos and what they were built from."""

    folder: Path
    portrait: Path
    speech: Path  # the good 3 s speech (the driving audio)
    videos: dict[str, Path] = field(default_factory=dict)
    gaps: np.ndarray | None = None  # mouth gap per frame (px)
    envelope: np.ndarray | None = None  # speech RMS per frame
    landmark_corr: float = float("nan")  # corr(dlib-measured opening, gaps) on the good frames
    build_seconds: float = 0.0


def _write(path: Path, frames: np.ndarray, audio: Path | None) -> Path:
    from sadtalker.video import VideoWriter

    # preset veryfast: ~3x quicker than the renders' "medium"; same codec, pixel format and audio path.
    with VideoWriter(path, audio=audio, num_frames=len(frames), preset="veryfast") as writer:
        writer.write(frames)
    return path


def build_qc_media(folder: Path) -> QCMedia:
    """Write every variant into ``folder`` (~75 frames each; a few seconds in all)."""
    import time

    from sadtalker.qc.face import face_models
    from sadtalker.qc.sync import mouth_opening

    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    portrait = load_rgb(DATA / "portrait.png")
    samples = speech_track()
    gaps = gap_curve(samples)
    talking = animate(portrait, gaps)

    # The mouth must really follow the speech: dlib's inner-lip opening against the gap we drew.
    models = face_models()
    box = models.detect(portrait)[0].box
    measured = np.array([mouth_opening(models.landmarks(frame, box)) for frame in talking])
    landmark_corr = float(np.corrcoef(measured, gaps)[0, 1])

    good = np.stack([head_motion(frame, i) for i, frame in enumerate(talking)])
    media = QCMedia(
        folder, DATA / "portrait.png", folder / "speech.wav", gaps=gaps, envelope=envelope(samples)
    )
    media.landmark_corr = landmark_corr
    soundfile.write(media.speech, samples, RATE, subtype="PCM_16")
    muted = folder / "muted.wav"
    soundfile.write(muted, np.zeros_like(samples), RATE, subtype="PCM_16")
    shifted = folder / "shifted.wav"  # the same speech 5 frames (200 ms) later, same length
    delayed = np.concatenate([np.zeros(SHIFT_FRAMES * HOP, np.int16), samples])[: len(samples)]
    soundfile.write(shifted, delayed, RATE, subtype="PCM_16")

    v = media.videos
    v["good"] = _write(folder / "good.mp4", good, media.speech)
    frozen = good.copy()
    frozen[20:56] = good[20]  # 36 identical frames (1.44 s)
    v["frozen"] = _write(folder / "frozen.mp4", frozen, media.speech)
    v["muted"] = _write(folder / "muted.mp4", good, muted)
    v["missing_audio"] = _write(folder / "missing_audio.mp4", good, None)
    v["shifted"] = _write(folder / "shifted.mp4", good, shifted)
    blurred = np.stack([cv2.GaussianBlur(frame, (0, 0), 3.0) for frame in good])
    v["blurred"] = _write(folder / "blurred.mp4", blurred, media.speech)

    # Another person's face (also talking) pasted over the portrait's face, then the same head motion.
    other = animate(load_rgb(DATA / "other_face.png"), gaps)
    x0, y0, x1, y1 = box
    mask = face_mask(portrait.shape[:2], (x0 - 4, y0 - 12, x1 + 4, y1 + 8))[..., None]
    pasted = np.rint(other * mask + talking * (1 - mask)).astype(np.uint8)
    v["other_face"] = _write(
        folder / "other_face.mp4", np.stack([head_motion(f, i) for i, f in enumerate(pasted)]), media.speech
    )
    rng = np.random.default_rng(10)
    noise_mask = face_mask(portrait.shape[:2], box, feather=2.0)[..., None]
    noisy = [
        np.rint(rng.integers(0, 256, portrait.shape) * noise_mask + f * (1 - noise_mask)).astype(np.uint8)
        for f in talking
    ]
    v["noise_face"] = _write(
        folder / "noise_face.mp4", np.stack([head_motion(f, i) for i, f in enumerate(noisy)]), media.speech
    )
    data = v["good"].read_bytes()
    v["truncated"] = folder / "truncated.mp4"
    v["truncated"].write_bytes(data[: len(data) * 6 // 10])
    media.build_seconds = time.perf_counter() - start
    return media


if __name__ == "__main__":  # python tests/qc_media.py OUT_DIR: write the videos to look at them
    import sys

    built = build_qc_media(Path(sys.argv[1] if len(sys.argv) > 1 else "qc_media"))
    print(f"landmark corr {built.landmark_corr:.3f}; {built.build_seconds:.1f} s")
    for name, path in built.videos.items():
        print(name, path)
