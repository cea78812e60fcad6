"""SyncNet lip-sync scores LSE-D and LSE-C, computed the way the Wav2Lip / syncnet_python evaluation does.

What the published evaluation does (read from joonson/syncnet_python ``SyncNetModel.py``,
``SyncNetInstance.py``, ``run_pipeline.py``, ``demo_syncnet.py``, ``download_model.sh``, and
Rudrabha/Wav2Lip ``evaluation/scores_LSE/SyncNetInstance_calc_scores.py``,
``calculate_scores_real_videos.py``), and what this module reproduces:

* **Network** (Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV workshops 2016;
  the ``syncnet_v2.model`` variant of 2019): two towers embedding into 1024-d.

  - audio ``netcnnaud`` on a ``(1, 13, 20)`` MFCC window (13 coefficients x 20 steps of 10 ms = 0.2 s):
    six Conv2d+BatchNorm2d+ReLU stages, max pools after stages 1 (1x1), 2 (3x3, stride (1, 2)) and
    5 (3x3, stride 2); the last conv (5x4) leaves 512 x 1 x 1; then ``netfcaud`` Linear 512-512,
    BatchNorm1d, ReLU, Linear 512-1024.
  - lips ``netcnnlip`` on ``(3, 5, 224, 224)``: five BGR frames of 0..255 (no normalisation); six
    Conv3d+BatchNorm3d+ReLU stages (first kernel 5x7x7 stride (1, 2, 2) spans the five frames), max pools
    after stages 1, 2 and 5, the last conv (1x6x6) leaves 512 x 1 x 1 x 1; then ``netfclip`` like
    ``netfcaud``.

* **Checkpoint**: ``syncnet_v2.model`` is read by ``SyncNetInstance.loadParameters`` as a mapping
  ``{state_dict key: tensor}`` of that network (keys ``netcnnaud.0.weight`` ... ``netfclip.3.bias``),
  copied key by key. BatchNorm ``num_batches_tracked`` counters are not needed at evaluation; files
  written before PyTorch 0.4.1 have none, so they are the only keys allowed to be absent (filled with
  0). Everything else loads strictly through :mod:`sadtalker.weights.loading` with
  ``torch.load(weights_only=True)``: a pickle that would run code is refused.

* **Inputs**: video at 25 fps, audio 16 kHz mono PCM-16 (the evaluation extracts it with ffmpeg
  ``pcm_s16le``, so the MFCC sees integer sample values, not [-1, 1]). Frames are face crops resized to
  224 x 224 (``cv2.resize``, bilinear) in OpenCV's BGR order; the *whole* crop is used, there is no
  lower-half / mouth crop in this evaluation (that is Wav2Lip's own training discriminator). For real
  videos the crop comes from ``run_pipeline.py``: S3FD boxes median-filtered over 13 frames, a square of
  side 2.8 x half the box size whose top is the box's top edge (``crop_scale`` 0.4), padded with grey
  110; :func:`syncnet_crops` builds the same crop from any face boxes.

* **MFCC**: ``python_speech_features.mfcc`` with its defaults (25 ms rectangular frames every 10 ms,
  pre-emphasis 0.97, 512-point FFT power spectrum / 512, 26 mel filters 0-8 kHz, log, orthonormal DCT-II,
  13 cepstra, lifter 22, c0 replaced by the log frame energy); :func:`mfcc` reimplements it in numpy.

* **Scores**: ``L = min(frames, floor(samples / 640))`` frames; windows ``v = 0 .. L-6`` (the official
  loop stops one window short of ``L-5``): lip window frames ``v .. v+4``, audio window MFCC steps
  ``4v .. 4v+19``. For each lip embedding ``i`` and shift ``k`` in ``-15 .. 15`` (``vshift`` 15), the
  distance ``||lip_i - aud_{i+k} + 1e-6||`` (``pairwise_distance``; audio embeddings outside the clip are
  zero vectors, as the official zero padding makes them); ``mean_dist[k]`` averages over ``i``.
  **LSE-D** = ``min_k mean_dist``, **LSE-C** = ``median_k mean_dist - min_k mean_dist``, offset =
  ``-argmin k`` (``vshift - minidx``): a positive offset means the video lags the audio by that many
  frames (the sound comes first).

What is not reproduced: the evaluation's JPEG / XVID re-encoding of frames and crops, and S3FD face
detection (callers bring their own boxes).

The weights file has no published SHA-256: the file's measured hash is returned with every score (and goes
into the QC record that used it), so two records are comparable only when their hashes agree.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sadtalker.atomic import atomic_path
from sadtalker.errors import WeightsError
from sadtalker.hashing import sha256_file
from sadtalker.weights.loading import load_checkpoint, load_strict
from sadtalker.weights.registry import REGISTRY, WeightFile, cache_dir

SYNCNET_FILE: WeightFile = REGISTRY["syncnet_v2.model"]
FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_PER_FRAME = 4  # 100 MFCC steps per second / 25 fps
WINDOW_FRAMES = 5
MFCC_WINDOW = WINDOW_FRAMES * MFCC_PER_FRAME  # 20 steps = 0.2 s
CROP_SIZE = 224
VSHIFT = 15
EMBEDDING = 1024
_PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's default, kept explicit

# ---------------------------------------------------------------------------------------------- network

# One row per conv stage: (in, out, kernel, stride, padding, pool) with pool = (kernel, stride, padding) or
# None. Each stage is conv, batch norm, ReLU[, max pool], which puts the convolutions at Sequential indices
# 0, 4, 8, 11, 14, 18 and the batch norms at 1, 5, 9, 12, 15, 19, as in the published state dict.
_AUDIO_STAGES = (
    (1, 64, (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1), (0, 0))),
    (64, 192, (3, 3), (1, 1), (1, 1), ((3, 3), (1, 2), (0, 0))),
    (192, 384, (3, 3), (1, 1), (1, 1), None),
    (384, 256, (3, 3), (1, 1), (1, 1), None),
    (256, 256, (3, 3), (1, 1), (1, 1), ((3, 3), (2, 2), (0, 0))),
    (256, 512, (5, 4), (1, 1), (0, 0), None),
)
_LIP_STAGES = (
    (3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    (96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
    (256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
    (256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
    (256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    (256, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0), None),
)


def _tower(stages: Sequence[tuple], dims: int) -> nn.Sequential:
    conv, norm, pool = (
        (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)
    )
    layers: list[nn.Module] = []
    for c_in, c_out, kernel, stride, padding, pooling in stages:
        layers += [conv(c_in, c_out, kernel, stride=stride, padding=padding), norm(c_out), nn.ReLU()]
        if pooling is not None:
            layers.append(pool(pooling[0], stride=pooling[1], padding=pooling[2]))
    return nn.Sequential(*layers)


def _head(embedding: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))


class SyncNet(nn.Module):
    """SyncNet (Chung & Zisserman 2016), the ``syncnet_v2.model`` network of joonson/syncnet_python
    (``SyncNetModel.S``). Attribute names are the checkpoint's key prefixes: ``netcnnaud``, ``netfcaud``,
    ``netcnnlip``, ``netfclip``.

    ``embed_audio``: MFCC windows ``(B, 1, 13, 20)`` -> ``(B, 1024)``.
    ``embed_lips``: BGR 0..255 windows ``(B, 3, 5, 224, 224)`` -> ``(B, 1024)``.
    """

    def __init__(self, embedding: int = EMBEDDING):
        super().__init__()
        # Registration order of the original module (state_dict order).
        self.netcnnaud = _tower(_AUDIO_STAGES, 2)
        self.netfcaud = _head(embedding)
        self.netfclip = _head(embedding)
        self.netcnnlip = _tower(_LIP_STAGES, 3)

    def embed_audio(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def embed_lips(self, frame_windows: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frame_windows).flatten(1))


def _is_counter(key: str) -> bool:
    return key.endswith(".num_batches_tracked")


def syncnet_layout() -> dict[str, tuple[int, ...]]:
    """The checkpoint layout ``{key: shape}`` in state_dict order, derived from :class:`SyncNet` (built on
    the meta device, no memory). BatchNorm ``num_batches_tracked`` counters are left out: they are optional
    in the file (see the module docstring)."""
    with torch.device("meta"):
        module = SyncNet()
    return {key: tuple(t.shape) for key, t in module.state_dict().items() if not _is_counter(key)}


# ---------------------------------------------------------------------------------------------- weights


def find_syncnet_weights(folder: Path | None = None) -> tuple[Path | None, str]:
    """``(path, "")`` when ``syncnet_v2.model`` is in the weights folder (``$SADTALKER_WEIGHTS``, else the
    cache), else ``(None, reason)`` with the command that fetches it."""
    from sadtalker.loader import weights_folder

    folder = Path(folder) if folder is not None else weights_folder()
    path = folder / SYNCNET_FILE.name
    if path.is_file():
        return path, ""
    command = f"sadtalker weights fetch {SYNCNET_FILE.name}"
    if folder.resolve() != cache_dir().resolve():
        command += f" --dest {folder}"
    return None, f"{SYNCNET_FILE.name} not in {folder}: run `{command}`"


_LOADED: dict[tuple[str, int, int, str], tuple[SyncNet, str]] = {}
_LOAD_LOCK = threading.Lock()


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> tuple[SyncNet, str]:
    """The network in eval mode on ``device`` and the file's SHA-256, loaded once per process per
    (file, size, mtime, device); concurrent first calls wait for one load.

    Raises:
        WeightsError: missing file, a pickle that is not plain tensors (``weights_only=True``), a missing
            or unexpected key, or a wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"SyncNet checkpoint not found: {path}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(torch.device(device)))
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(path, torch.device(device))
        return _LOADED[key]


def _load(path: Path, device: torch.device) -> tuple[SyncNet, str]:
    state = load_checkpoint(path)  # torch.load(weights_only=True); WeightsError on a code payload
    net = SyncNet()
    for key, value in net.state_dict().items():
        if _is_counter(key) and key not in state:
            state[key] = torch.zeros_like(value)  # evaluation ignores the counter
    load_strict(net, state, f"SyncNet ({path.name})")
    return net.eval().requires_grad_(False).to(device), sha256_file(path)


def write_synthetic_syncnet(path: str | Path, seed: int = 0) -> Path:
    """Write a checkpoint in the official layout (flat ``{key: float32 tensor}``, no BatchNorm counters)
    with deterministic pseudo-random values (the project's synthetic rule, keyed by seed and key) via
    ``torch.save``. For tests: its scores mean nothing."""
    from sadtalker.weights.synthetic import synthetic_tensor

    path = Path(path)
    state = {
        key: torch.from_numpy(np.array(synthetic_tensor(seed, key, "float32", shape), dtype=np.float32))
        for key, shape in syncnet_layout().items()
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


# ------------------------------------------------------------------------------------------------- audio


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Mono audio as the integer sample values a 16-bit WAV holds (float64 array). Float input in [-1, 1]
    is scaled by 32768, rounded and clipped like ffmpeg's ``pcm_s16le`` conversion; int16 passes as is."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (samples,), got shape {audio.shape}")
    if audio.dtype == np.int16:
        return audio.astype(np.float64)
    return np.clip(np.rint(audio.astype(np.float64) * 32768.0), -32768, 32767)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(nfilt: int = 26, nfft: int = 512, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular mel filters ``(nfilt, nfft // 2 + 1)`` over 0 .. sample_rate / 2, with edges on the FFT
    bins ``floor((nfft + 1) * hz / sample_rate)`` (python_speech_features' ``get_filterbanks``)."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), nfilt + 2)
    edges = np.floor((nfft + 1) * _mel_to_hz(mels) / sample_rate)
    bins = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
    low, mid, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where((bins >= low) & (bins < mid), (bins - low) / (mid - low), 0.0)
        falling = np.where((bins >= mid) & (bins < high), (high - bins) / (high - mid), 0.0)
    return rising + falling


def mfcc(
    signal: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    winlen: float = 0.025,
    winstep: float = 0.01,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    preemph: float = 0.97,
    ceplifter: int = 22,
) -> np.ndarray:
    """MFCC ``(frames, numcep)`` as ``python_speech_features.mfcc`` computes it with these defaults
    (``appendEnergy=True``, rectangular window, ``lowfreq=0``, ``highfreq=sample_rate/2``).

    Frames: ``1 + ceil((n - frame_len) / step)`` (one frame when ``n <= frame_len``), the last zero-padded.
    Zero energies are replaced by float64 eps before the log, so silence gives finite values.
    """
    from scipy.fft import dct

    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"signal must be a non-empty 1-D array, got shape {x.shape}")
    x = np.concatenate([x[:1], x[1:] - preemph * x[:-1]])
    # round half up, as the reference's framing does (decimal ROUND_HALF_UP)
    frame_len = int(math.floor(winlen * sample_rate + 0.5))
    step = int(math.floor(winstep * sample_rate + 0.5))
    count = 1 if x.size <= frame_len else 1 + math.ceil((x.size - frame_len) / step)
    padded = np.zeros((count - 1) * step + frame_len)
    padded[: x.size] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_len)[::step]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    bands = power @ mel_filterbank(nfilt, nfft, sample_rate).T
    bands = np.where(bands == 0, eps, bands)
    cepstra = dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        cepstra = cepstra * (1.0 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
    cepstra[:, 0] = np.log(energy)
    return cepstra


# ------------------------------------------------------------------------------------------------ frames


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


class FaceCrops(Sequence):
    """:func:`syncnet_crops`, cut on demand: ``crops[i]`` is frame ``i``'s ``(224, 224, 3)`` uint8 crop, made
    when it is read, so a whole clip's crops are never held (150 KB a frame: 2.3 GB per 10 minutes).
    ``frames`` may be a memory map. ``shape`` / ``dtype`` / ``ndim`` describe the stack it stands for.

    Args: as :func:`syncnet_crops`. Reading a crop whose face box is empty raises ``ValueError``.
    """

    def __init__(
        self,
        frames: np.ndarray,
        boxes: np.ndarray | Sequence[float],
        crop_scale: float = 0.4,
        smooth: int = 13,
    ):
        from scipy.ndimage import median_filter

        frames = np.asarray(frames)  # a memory map stays one (no copy)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
        boxes = np.asarray(boxes, dtype=np.float64)
        boxes = np.broadcast_to(boxes, (len(frames), 4)) if boxes.ndim == 1 else boxes
        if boxes.shape != (len(frames), 4):
            raise ValueError(f"boxes must be (4,) or ({len(frames)}, 4), got {boxes.shape}")
        half = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        size = min(smooth, len(frames) - (1 - len(frames) % 2))  # odd, at most the clip length
        if size > 1:
            half, cy, cx = (median_filter(v, size=size, mode="nearest") for v in (half, cy, cx))
        self.frames, self.boxes, self.crop_scale = frames, boxes, crop_scale
        self.half, self.cy, self.cx = half, cy, cx
        self.shape = (len(frames), CROP_SIZE, CROP_SIZE, 3)
        self.dtype, self.ndim = np.dtype(np.uint8), 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return np.stack([self[k] for k in range(*i.indices(len(self)))])
        s, c = self.half[i], self.crop_scale
        pad = int(s * (1 + 2 * c))
        canvas = np.pad(self.frames[i], ((pad, pad), (pad, pad), (0, 0)), constant_values=110)
        y, x = self.cy[i] + pad, self.cx[i] + pad
        face = canvas[int(y - s) : int(y + s * (1 + 2 * c)), int(x - s * (1 + c)) : int(x + s * (1 + c))]
        if face.size == 0:
            raise ValueError(f"frame {i}: empty face box {self.boxes[i].tolist()}")
        return _resize(face, CROP_SIZE)


def syncnet_crops(
    frames: np.ndarray,
    boxes: np.ndarray | Sequence[float],
    crop_scale: float = 0.4,
    smooth: int = 13,
) -> np.ndarray:
    """Face crops ``(N, 224, 224, 3)`` uint8 cut as syncnet_python's ``run_pipeline.py`` cuts them
    (all at once; :class:`FaceCrops` cuts them one at a time, for long clips).

    Args:
        frames: ``(N, H, W, 3)`` uint8 (any channel order; it is kept).
        boxes: face boxes ``(N, 4)`` or one ``(4,)`` for all frames, ``x1, y1, x2, y2`` in pixels.
        crop_scale: the pipeline's ``--crop_scale``.
        smooth: median filter length over time for box size and centre (the pipeline's 13). The
            pipeline's filter pads with zeros, harmless on its tracks of 100+ frames; here the ends
            repeat the edge values so that short clips keep their boxes.

    Each crop is the square ``[cy - s, cy + s(1 + 2c)] x [cx - s(1 + c), cx + s(1 + c)]``, ``s`` half the
    longer box side, ``c`` = crop_scale, on the frame padded with grey 110, resized to 224 (bilinear).
    """
    crops = FaceCrops(frames, boxes, crop_scale, smooth)
    return crops[:] if len(crops) else np.empty(crops.shape, np.uint8)


# ------------------------------------------------------------------------------------------------ scores


def sync_scores(lip: torch.Tensor, aud: torch.Tensor, vshift: int = VSHIFT) -> dict:
    """LSE-D, LSE-C and the offset from embeddings ``lip`` and ``aud`` ``(n, D)`` (row i = window i).

    ``mean_dist[j]`` (``j = 0 .. 2 vshift``) is the mean over ``i`` of ``||lip_i - aud_{i + j - vshift}
    + eps||``, with zero audio rows outside ``0 .. n-1``.
    """
    if lip.shape != aud.shape or lip.ndim != 2 or len(lip) == 0:
        raise ValueError(f"embeddings must both be (n, D), got {tuple(lip.shape)} and {tuple(aud.shape)}")
    n = len(lip)
    padded = torch.nn.functional.pad(aud, (0, 0, vshift, vshift))
    pairwise = torch.nn.functional.pairwise_distance
    mean_dist = torch.stack(
        [pairwise(lip, padded[j : j + n], eps=_PAIRWISE_EPS).mean() for j in range(2 * vshift + 1)]
    )
    best = int(torch.argmin(mean_dist))  # the first of equal minima, as torch.min
    lse_d = float(mean_dist[best])
    return {
        "lse_d": lse_d,
        "lse_c": float(torch.median(mean_dist)) - lse_d,
        "offset_frames": vshift - best,
        "mean_dist": [float(v) for v in mean_dist],
    }


def _as_net(net, device) -> tuple[SyncNet, str]:
    if net is None:
        path, reason = find_syncnet_weights()
        if path is None:
            raise WeightsError(reason)
        return load_syncnet(path, device or "cpu")
    if isinstance(net, (str, Path)):
        return load_syncnet(net, device or "cpu")
    if isinstance(net, tuple):
        return net
    if isinstance(net, SyncNet):
        return net, "unknown"
    raise TypeError(f"net must be None, a path, a SyncNet or load_syncnet's (SyncNet, sha256), got {net!r}")


def lse_metrics(
    face_frames: np.ndarray,
    audio: np.ndarray,
    net: SyncNet | tuple[SyncNet, str] | str | Path | None = None,
    *,
    vshift: int = VSHIFT,
    batch_size: int = 20,
    device: str | torch.device | None = None,
) -> dict:
    """LSE-D / LSE-C of a talking-face clip, by the Wav2Lip / syncnet_python evaluation protocol.

    Args:
        face_frames: ``(N, H, W, 3)`` uint8 RGB face crops at 25 fps (e.g. :func:`syncnet_crops`); resized
            to 224 x 224 and turned to BGR as the evaluation reads its JPEGs.
        audio: mono 16 kHz, float in [-1, 1] (converted to 16-bit sample values) or int16.
        net: ``None`` (``syncnet_v2.model`` from the weights folder; :class:`WeightsError` with the reason
            when absent), a checkpoint path, :func:`load_syncnet`'s ``(net, sha256)``, or a bare
            :class:`SyncNet` (sha256 ``"unknown"``).
        vshift: largest offset searched, in frames, each way (the evaluation's 15).
        batch_size: windows per forward pass (no effect on the result: batch norm runs on its statistics).
        device: where to run; default the network's device.

    Returns:
        ``{"lse_d", "lse_c", "offset_frames", "sha256", "windows", "vshift", "mean_dist"}``: ``windows``
        5-frame windows were scored; ``mean_dist`` is the mean distance per offset ``vshift .. -vshift``
        (index ``j`` is offset ``vshift - j``). ``offset_frames`` > 0: the video lags the audio.

    Raises:
        ValueError: bad shapes, or fewer than 6 frames with audio (no window to score).
        WeightsError: no weights found / a file that does not load.
    """
    frames = face_frames if isinstance(face_frames, FaceCrops) else np.asarray(face_frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"face_frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    pcm = to_pcm16(audio)
    length = min(len(frames), len(pcm) // SAMPLES_PER_FRAME)
    windows = length - WINDOW_FRAMES  # the official loop's count (one short of the last full window)
    if windows < 1:
        raise ValueError(
            f"too short for SyncNet: {len(frames)} frames and {len(pcm) / SAMPLE_RATE:.3f} s of audio give "
            f"{max(length, 0)} frames; at least {WINDOW_FRAMES + 1} are needed"
        )
    model, sha256 = _as_net(net, device)
    run_on = torch.device(device) if device is not None else next(model.parameters()).device
    if next(model.parameters()).device != run_on:
        raise ValueError(f"the network is on {next(model.parameters()).device}, not on {run_on}")

    coeffs = torch.from_numpy(mfcc(pcm).T.astype(np.float32))  # (13, steps)

    def video(first: int, stop: int) -> torch.Tensor:
        """Frames first..stop-1 as ``(3, n, 224, 224)`` BGR 0..255 float, the official tensor's layout; a
        batch's frames only (the whole clip's would be 600 KB a frame: 9 GB per 10 minutes)."""
        frames_bgr = [_resize(frames[k], CROP_SIZE)[:, :, ::-1] for k in range(first, stop)]
        return torch.from_numpy(np.stack(frames_bgr).astype(np.float32)).permute(3, 0, 1, 2)

    lip_out, aud_out = [], []
    with torch.inference_mode():
        for start in range(0, windows, batch_size):
            idx = range(start, min(windows, start + batch_size))
            clip = video(start, idx[-1] + WINDOW_FRAMES)  # the batch's windows' frames
            lips = torch.stack([clip[:, v - start : v - start + WINDOW_FRAMES] for v in idx])
            auds = torch.stack(
                [coeffs[:, v * MFCC_PER_FRAME : v * MFCC_PER_FRAME + MFCC_WINDOW] for v in idx]
            ).unsqueeze(1)
            lip_out.append(model.embed_lips(lips.to(run_on)).float().cpu())
            aud_out.append(model.embed_audio(auds.to(run_on)).float().cpu())
    scores = sync_scores(torch.cat(lip_out), torch.cat(aud_out), vshift)
    return {**scores, "sha256": sha256, "windows": windows, "vshift": vshift}


def describe(result: Mapping) -> str:
    """One line for logs: ``LSE-D 7.12, LSE-C 6.30, offset +1 frame(s), syncnet_v2 sha256 1a2b3c4d``."""
    return (
        f"LSE-D {result['lse_d']:.2f}, LSE-C {result['lse_c']:.2f}, offset {result['offset_frames']:+d} "
        f"frame(s), syncnet_v2 sha256 {str(result['sha256'])[:8]}"
    )
