"""Motion metrics from the clip's ``(T, 70)`` coefficients (expression 0:64 | yaw, pitch, roll 64:67 in
radians | translation 67:70), one row per video frame (25 fps).

* ``pose_std_deg``: head-pose diversity, the standard deviation over time of yaw, pitch and roll in
  degrees, averaged over the three angles. A still head (0) looks dead; SadTalker's PoseVAE gives a few
  degrees.
* ``beat_align``: the Beat Align Score of Bailando (Siyao et al., CVPR 2022), as its code computes it:
  motion beats are the local minima of the Gaussian-smoothed velocity, here of the head pose in degrees
  per frame; audio beats come from librosa's beat tracker on the onset strength of the speech (hop = one
  video frame; its onsets when it tracks no beat); ``BAS = mean over audio beats b of
  exp(-min_m (b - m)² / (2 sigma²))``. Bailando's constants are frames of its 60 fps motion (smoothing
  sigma 5, score sigma 3, i.e. ``/ 2 / 9``); they are converted to the same *times* at the clip's rate
  (83 ms and 50 ms: 2.08 and 1.25 frames at 25 fps). Taken literally as 25 fps frames, the smoothing
  would erase any head motion faster than ~1 s. 1 = every audio beat has a motion beat on it.
* ``expression_speech_corr``: the Pearson correlation, over frames, of the expression energy (distance of
  the 64 expression coefficients from their mean over the quietest 20 % of frames, i.e. from the face at
  rest) with the speech RMS of the same frame. Speech moves the face: a healthy clip correlates
  positively.
"""

from __future__ import annotations

import numpy as np

POSE = slice(64, 67)
EXPRESSION = slice(0, 64)
BAILANDO_FPS = 60.0
BA_SIGMA_S = 3.0 / BAILANDO_FPS  # Bailando: exp(-d² / 2 / 9) in 60 fps frames
VELOCITY_SMOOTHING_S = 5.0 / BAILANDO_FPS  # Bailando: gaussian_filter(kinetic_vel, 5) in 60 fps frames
QUIET_SHARE = 0.2
ONSET_N_FFT = 2048  # librosa.onset.onset_strength's defaults: 2048-sample Hann frames, 128 mel bands
ONSET_CHUNK_FRAMES = 2048  # spectrogram frames per chunk: 17 MB of complex STFT, whatever the clip's length


def _check(coefficients: np.ndarray) -> np.ndarray:
    array = np.asarray(coefficients, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < 70:
        raise ValueError(f"coefficients must be (T, >=70), got {array.shape}")
    return array


def pose_std_deg(coefficients: np.ndarray) -> float:
    """Mean over yaw / pitch / roll of their standard deviation over time, in degrees."""
    angles = np.degrees(_check(coefficients)[:, POSE])
    return float(angles.std(axis=0).mean())


def motion_beats(coefficients: np.ndarray, fps: float = 25.0) -> np.ndarray:
    """Frame indices of the local minima of the smoothed head-pose speed (degrees per frame)."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import argrelextrema

    angles = np.degrees(_check(coefficients)[:, POSE])
    if len(angles) < 3:
        return np.zeros(0, dtype=int)
    speed = np.linalg.norm(np.diff(angles, axis=0), axis=1)
    speed = gaussian_filter1d(speed, VELOCITY_SMOOTHING_S * fps)
    return argrelextrema(speed, np.less)[0]


def mel_power_db(
    audio: np.ndarray, sample_rate: int, hop: int, chunk_frames: int = ONSET_CHUNK_FRAMES
) -> np.ndarray:
    """``power_to_db(melspectrogram(y=audio, sr, n_fft=2048, hop_length=hop))`` as librosa computes it
    inside ``onset_strength`` (centred zero-padded Hann frames, power 2, 128 mel bands, 80 dB floor under
    the global peak), ``(128, 1 + len(audio) // hop)`` float32, computed ``chunk_frames`` frames at a time.

    Why chunks: librosa holds the clip's whole complex STFT (1025 bins x 8 bytes a frame: 123 MB per 10
    minutes at 25 frames/s) and its power spectrogram, which made QC the peak of a long clip's process.
    Each frame reads only its own 2048 samples, so the chunks' frames are the whole-clip frames (the same
    samples and window; the mel product may round differently in the last bit).
    """
    import librosa

    y = np.asarray(audio, dtype=np.float32).reshape(-1)
    frames = 1 + len(y) // hop
    half = ONSET_N_FFT // 2
    basis = librosa.filters.mel(sr=sample_rate, n_fft=ONSET_N_FFT)  # (128, 1025), as melspectrogram's
    mel = np.empty((basis.shape[0], frames), dtype=np.float32)
    for first in range(0, frames, chunk_frames):
        last = min(first + chunk_frames, frames)
        # frame t covers samples [t*hop - half, t*hop + half) of the zero-padded clip (librosa's centring)
        start, stop = first * hop - half, (last - 1) * hop + half
        piece = y[max(start, 0) : max(min(stop, len(y)), 0)]
        piece = np.pad(piece, (max(-start, 0), max(stop - len(y), 0)))
        spectrum = librosa.stft(piece, n_fft=ONSET_N_FFT, hop_length=hop, center=False)
        mel[:, first:last] = basis @ (np.abs(spectrum) ** 2)
    return librosa.power_to_db(mel)


def global_tempo(
    envelope: np.ndarray, sample_rate: int, hop: int, chunk_frames: int = ONSET_CHUNK_FRAMES
) -> float:
    """The tempo (BPM) ``librosa.beat.beat_track`` estimates from an onset ``envelope`` by default (the mean
    over frames of the 8 s autocorrelation tempogram, weighted by a log-normal prior around 120 BPM), with
    the tempogram's columns summed ``chunk_frames`` at a time: librosa holds the whole tempogram and its
    FFT, 150 MB per 10 minutes at 25 frames/s (measured). Each column reads only its own window of the
    (linear-ramp padded) envelope, so the columns are librosa's; only the mean's summation order differs.
    """
    import librosa

    envelope = np.asarray(envelope, dtype=np.float32).reshape(-1)
    frames = len(envelope)
    window = int(librosa.time_to_frames(8.0, sr=sample_rate, hop_length=hop))  # tempo()'s ac_size
    padded = np.pad(envelope, window // 2, mode="linear_ramp", end_values=(0, 0))  # tempogram's centring
    total = np.zeros(window, dtype=np.float64)
    for first in range(0, frames, chunk_frames):
        last = min(first + chunk_frames, frames)
        columns = librosa.feature.tempogram(
            onset_envelope=padded[first : last - 1 + window],
            sr=sample_rate,
            hop_length=hop,
            win_length=window,
            center=False,
        )  # (window, last - first): the whole-clip tempogram's columns first..last-1
        total += columns.sum(axis=1)
    mean = (total / frames).astype(np.float32)[:, None]
    return float(librosa.feature.tempo(tg=mean, sr=sample_rate, hop_length=hop)[0])


def audio_beats(
    audio: np.ndarray, fps: float = 25.0, sample_rate: int = 16_000, chunk_frames: int = ONSET_CHUNK_FRAMES
) -> np.ndarray:
    """Frame indices (one frame = ``1/fps`` s) of the beats librosa tracks in ``audio``; its onsets when the
    beat tracker finds none (short clips). librosa's onset strength and beat tracker, on the spectrogram
    and tempo computed in chunks (:func:`mel_power_db`, :func:`global_tempo`), so that the memory does not
    grow with the clip's length (the envelope is 4 bytes per frame)."""
    import librosa

    hop = int(round(sample_rate / fps))
    spectrum = mel_power_db(audio, sample_rate, hop, chunk_frames)
    strength = librosa.onset.onset_strength(S=spectrum, sr=sample_rate, hop_length=hop)
    del spectrum
    beats = np.zeros(0, dtype=int)
    if strength.any():  # beat_track finds nothing in silence (and the tempo of silence is meaningless)
        tempo = global_tempo(strength, sample_rate, hop, chunk_frames)
        _, beats = librosa.beat.beat_track(onset_envelope=strength, sr=sample_rate, hop_length=hop, bpm=tempo)
    beats = np.asarray(beats, dtype=int)
    if beats.size == 0:
        beats = np.asarray(
            librosa.onset.onset_detect(onset_envelope=strength, sr=sample_rate, hop_length=hop), dtype=int
        )
    return beats


def beat_align_score(beats: np.ndarray, motion: np.ndarray, fps: float = 25.0) -> float | None:
    """Bailando's BA: the mean over audio ``beats`` b of ``exp(-min_m (b - m)² / (2 sigma²))``, m over
    the ``motion`` beats; None without beats."""
    beats = np.asarray(beats, dtype=np.float64)
    motion = np.asarray(motion, dtype=np.float64)
    if beats.size == 0 or motion.size == 0:
        return None
    sigma = BA_SIGMA_S * fps
    nearest = np.min((beats[:, None] - motion[None, :]) ** 2, axis=1)
    return float(np.mean(np.exp(-nearest / (2 * sigma * sigma))))


def expression_energy(coefficients: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """Per frame, the distance of the expression from the face at rest (mean over the quietest frames)."""
    expression = _check(coefficients)[:, EXPRESSION]
    speech = np.asarray(speech, dtype=np.float64)[: len(expression)]
    expression = expression[: len(speech)]
    quiet = np.argsort(speech, kind="stable")[: max(1, int(round(QUIET_SHARE * len(speech))))]
    rest = expression[quiet].mean(axis=0)
    return np.linalg.norm(expression - rest, axis=1)


def expression_speech_corr(coefficients: np.ndarray, speech: np.ndarray) -> float | None:
    """Pearson correlation of :func:`expression_energy` with the per-frame speech RMS ``speech``."""
    energy = expression_energy(coefficients, speech)
    speech = np.asarray(speech, dtype=np.float64)[: len(energy)]
    if len(energy) < 3 or energy.std() < 1e-9 or speech.std() < 1e-9:
        return None
    return float(np.corrcoef(energy, speech)[0, 1])
