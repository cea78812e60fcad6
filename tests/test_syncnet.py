"""SyncNet LSE-D / LSE-C (sadtalker.qc.syncnet): the published architecture, safe strict loading of
``syncnet_v2.model``, the MFCC of python_speech_features, the evaluation's windowing and offset sign."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from torch import nn

from sadtalker.errors import WeightsError
from sadtalker.hashing import sha256_file
from sadtalker.qc import syncnet as sn

# Shapes read from joonson/syncnet_python SyncNetModel.py (class S, num_layers_in_fc_layers=1024).
PUBLISHED_SHAPES = {
    "netcnnaud.0.weight": (64, 1, 3, 3),
    "netcnnaud.4.weight": (192, 64, 3, 3),
    "netcnnaud.8.weight": (384, 192, 3, 3),
    "netcnnaud.18.weight": (512, 256, 5, 4),
    "netcnnaud.19.running_var": (512,),
    "netfcaud.0.weight": (512, 512),
    "netfcaud.1.running_mean": (512,),
    "netfcaud.3.weight": (1024, 512),
    "netcnnlip.0.weight": (96, 3, 5, 7, 7),
    "netcnnlip.4.weight": (256, 96, 1, 5, 5),
    "netcnnlip.14.weight": (256, 256, 1, 3, 3),
    "netcnnlip.18.weight": (512, 256, 1, 6, 6),
    "netfclip.3.bias": (1024,),
}
BATCH_NORMS = [f"{tower}.{i}" for tower in ("netcnnaud", "netcnnlip") for i in (1, 5, 9, 12, 15, 19)] + [
    "netfcaud.1",
    "netfclip.1",
]


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory) -> Path:
    return sn.write_synthetic_syncnet(tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model", seed=0)


# ------------------------------------------------------------------------------------------ architecture


def test_layout_is_the_module_and_the_published_shapes():
    layout = sn.syncnet_layout()
    module_state = _meta_net().state_dict()
    assert layout == {k: tuple(v.shape) for k, v in module_state.items() if "num_batches_tracked" not in k}
    # 6 + 6 conv (weight, bias), 14 batch norms (4 tensors), 4 linear layers (weight, bias)
    assert len(layout) == 12 * 2 + 14 * 4 + 4 * 2 == 88
    for key, shape in PUBLISHED_SHAPES.items():
        assert layout[key] == shape, key
    counters = sorted(k for k in module_state if k.endswith("num_batches_tracked"))
    assert counters == sorted(f"{bn}.num_batches_tracked" for bn in BATCH_NORMS)
    assert sum(int(np.prod(s)) for s in layout.values()) == 13_640_256


def _meta_net() -> sn.SyncNet:
    with torch.device("meta"):
        return sn.SyncNet()


def test_towers_reduce_the_published_inputs_to_one_embedding(synthetic_file):
    net, _ = sn.load_syncnet(synthetic_file)
    lips, mfcc = torch.zeros(1, 3, 5, 224, 224), torch.zeros(1, 1, 13, 20)
    with torch.inference_mode():
        # 5 frames of 224 x 224 and 13 x 20 MFCC steps reach 512 x 1 x 1 before the 512-wide linear layer
        assert tuple(net.netcnnlip(lips).shape) == (1, 512, 1, 1, 1)
        assert tuple(net.netcnnaud(mfcc).shape) == (1, 512, 1, 1)
        assert tuple(net.embed_lips(lips).shape) == tuple(net.embed_audio(mfcc).shape) == (1, 1024)


# --------------------------------------------------------------------------------------------- loading


def test_synthetic_file_loads_strictly_with_weights_only(synthetic_file):
    raw = torch.load(synthetic_file, map_location="cpu", weights_only=True)
    assert isinstance(raw, dict) and set(raw) == set(sn.syncnet_layout())  # the official flat layout
    net, sha = sn.load_syncnet(synthetic_file)
    assert sha == sha256_file(synthetic_file)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    state = net.state_dict()
    for key, value in raw.items():
        assert torch.equal(state[key], value), key
    assert sn.load_syncnet(synthetic_file)[0] is net  # cached: loaded once per process


def test_same_seed_same_tensors(tmp_path, synthetic_file):
    again = torch.load(sn.write_synthetic_syncnet(tmp_path / "a.model", seed=0), weights_only=True)
    first = torch.load(synthetic_file, weights_only=True)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert first["netcnnlip.0.weight"].std() > 0 and first["netcnnlip.1.running_var"].min() >= 1


def test_concurrent_first_use_loads_once(synthetic_file, tmp_path, monkeypatch):
    path = tmp_path / "syncnet_v2.model"
    path.write_bytes(synthetic_file.read_bytes())
    calls = []
    real_load = sn._load
    monkeypatch.setattr(sn, "_load", lambda *a: calls.append(1) or real_load(*a))
    results = []
    threads = [threading.Thread(target=lambda: results.append(sn.load_syncnet(path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({id(net) for net, _ in results}) == 1


def test_counters_present_also_load(tmp_path):
    state = sn.SyncNet().state_dict()  # a file saved by PyTorch >= 0.4.1 would carry num_batches_tracked
    torch.save(state, tmp_path / "with_counters.model")
    net, _ = sn.load_syncnet(tmp_path / "with_counters.model")
    assert torch.equal(net.state_dict()["netfclip.3.weight"], state["netfclip.3.weight"])


def _edited(synthetic_file: Path, path: Path, edit) -> Path:
    state = torch.load(synthetic_file, weights_only=True)
    edit(state)
    torch.save(state, path)
    return path


def test_missing_key_is_refused(synthetic_file, tmp_path):
    path = _edited(synthetic_file, tmp_path / "m.model", lambda s: s.pop("netfclip.3.bias"))
    with pytest.raises(WeightsError, match=r"1 missing \['netfclip.3.bias'\]"):
        sn.load_syncnet(path)


def test_wrong_shape_is_refused(synthetic_file, tmp_path):
    def edit(state):
        state["netcnnaud.18.weight"] = torch.zeros(512, 256, 4, 4)

    path = _edited(synthetic_file, tmp_path / "s.model", edit)
    with pytest.raises(WeightsError, match=r"1 wrong shapes \['netcnnaud.18.weight: file \(512, 256, 4, 4\)"):
        sn.load_syncnet(path)


def test_unexpected_key_is_refused(synthetic_file, tmp_path):
    def edit(state):
        state["netcnnlip.21.weight"] = torch.zeros(3)

    path = _edited(synthetic_file, tmp_path / "u.model", edit)
    with pytest.raises(WeightsError, match=r"1 unexpected \['netcnnlip.21.weight'\]"):
        sn.load_syncnet(path)


class _Payload:
    """Unpickling this would create a file: the loader must refuse before anything runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_code_is_refused_and_never_runs(synthetic_file, tmp_path):
    marker = tmp_path / "payload-ran"
    state = torch.load(synthetic_file, weights_only=True)
    state["netcnnaud.0.weight"] = _Payload(marker)
    path = tmp_path / "evil.model"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="weights_only=True"):
        sn.load_syncnet(path)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------- finding


def test_find_reports_absence_with_the_command_then_finds_the_file(tmp_path, monkeypatch, synthetic_file):
    monkeypatch.setenv("SADTALKER_WEIGHTS", str(tmp_path))
    path, reason = sn.find_syncnet_weights()
    assert path is None
    command = f"sadtalker weights fetch syncnet_v2.model --dest {tmp_path}"
    assert reason == f"syncnet_v2.model not in {tmp_path}: run `{command}`"
    with pytest.raises(WeightsError, match="syncnet_v2.model not in"):
        sn.lse_metrics(np.zeros((8, 32, 32, 3), np.uint8), np.zeros(8 * 640, np.float32))
    found = tmp_path / "syncnet_v2.model"
    found.write_bytes(b"placed by the test")
    assert sn.find_syncnet_weights() == (found, "")
    # net=None now scores with the file found there (8 frames: 3 windows, cheap)
    loaded = []
    monkeypatch.setattr(sn, "load_syncnet", lambda p, d: loaded.append(p) or sn._load(synthetic_file, d))
    result = sn.lse_metrics(np.full((8, 32, 32, 3), 90, np.uint8), np.zeros(8 * 640, np.float32))
    assert loaded == [found] and result["windows"] == 3


def test_default_cache_reason_names_the_plain_command(monkeypatch):
    monkeypatch.delenv("SADTALKER_WEIGHTS", raising=False)
    path, reason = sn.find_syncnet_weights()
    if path is None:  # the test cache never holds official files
        assert reason.endswith("run `sadtalker weights fetch syncnet_v2.model`")


def test_weights_cli_knows_syncnet(tmp_path, monkeypatch, capsys, synthetic_file):
    from sadtalker.weights import __main__ as cli

    fetched = []
    monkeypatch.setattr(cli, "fetch", lambda weight, dest, **kw: fetched.append(weight.name) or dest)
    assert cli.main(["fetch", "--no-progress"]) == 0
    assert "syncnet_v2.model" not in fetched and "SadTalker_V0.0.2_256.safetensors" in fetched
    fetched.clear()
    assert cli.main(["fetch", "syncnet_v2", "--dest", str(tmp_path)]) == 0
    assert fetched == ["syncnet_v2.model"]
    (tmp_path / "syncnet_v2.model").write_bytes(synthetic_file.read_bytes())
    capsys.readouterr()
    assert cli.main(["list", "--dest", str(tmp_path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("syncnet_v2.model"))
    assert "(QC)" in line and "yes" in line and "no hash in registry" in line


# ------------------------------------------------------------------------------------------------ MFCC

# python_speech_features 0.6 (the version syncnet_python's requirements install), mfcc(SIGNAL, 16000),
# computed once with that package: rows 0, 10 and 23 of 24. Our implementation matched it to 0.0 on the
# test speech, on this signal and on lengths 1 .. 12345.
_N = np.arange(4000)
SIGNAL = np.round(
    8000 * np.sin(2 * np.pi * 440 * _N / 16000)
    + 3000 * np.sin(2 * np.pi * 1500 * _N / 16000 + 0.3)
    + 500 * np.sin(2 * np.pi * 3100 * _N / 16000) * np.sin(2 * np.pi * 3 * _N / 16000)
)
REFERENCE_ROWS = {
    0: [20.000709826053917, 16.399767940271353, -26.79051850661851, -10.778749931644963, -9.266803265902368,
        -18.37931796129964, -46.96183716608538, -50.15148048970059, 9.895783720128376, 43.58245672001951,
        1.9707733140387353, -3.2136894148287123, 17.10936365658963],
    10: [20.05339824674237, 11.15799006318283, -21.061761982341217, -6.180780857921827, -10.959643590038452,
         -16.502474104827193, -34.735929982877096, -58.81009237241048, 14.1432434537639, 52.61152973436514,
         -6.0577600407819, 0.4662970802588058, 23.673843572662644],
    23: [19.83598701001593, 9.28415410224557, -18.48744971504719, 5.2162629953955175, -2.1286699712605683,
         -25.3948184764598, -38.26357025285773, -52.81392504539707, 15.368225595500098, 57.38068303351756,
         -2.734443140099591, -6.94021467403511, 17.49125626897415],
}  # fmt: skip
# get_filterbanks(26, 512, 16000): filter j rises on bins [e_j, e_j+1) and falls on [e_j+1, e_j+2)
MEL_EDGES = [0, 2, 4, 7, 10, 13, 16, 20, 24, 29, 34, 40, 46, 53, 60, 68, 77, 87, 97, 109, 122, 136, 152, 169,
             188, 209, 231, 256]  # fmt: skip


def test_mfcc_matches_python_speech_features_values():
    ours = sn.mfcc(SIGNAL)
    assert ours.shape == (24, 13)  # 1 + ceil((4000 - 400) / 160)
    for row, values in REFERENCE_ROWS.items():
        np.testing.assert_allclose(ours[row], values, rtol=1e-9, atol=1e-9)


def test_mel_filterbank_edges_and_triangles():
    fb = sn.mel_filterbank()
    assert fb.shape == (26, 257)
    for j in range(26):
        lo, mid, hi = MEL_EDGES[j : j + 3]
        assert np.flatnonzero(fb[j]).tolist() == list(range(lo + 1, hi))
        assert fb[j, mid] == 1.0
        np.testing.assert_allclose(fb[j, lo:mid], (np.arange(lo, mid) - lo) / (mid - lo))
        np.testing.assert_allclose(fb[j, mid:hi], (hi - np.arange(mid, hi)) / (hi - mid))


@pytest.mark.parametrize(
    ("samples", "frames"), [(1, 1), (400, 1), (401, 2), (560, 2), (561, 3), (18820, 117)]
)
def test_mfcc_frame_count(samples, frames):
    assert sn.mfcc(np.ones(samples)).shape == (frames, 13)


def test_mfcc_scale_moves_only_the_energy_coefficient():
    # log filterbank energies shift by log(4) when the signal doubles: after the orthonormal DCT only c0
    # would move, and c0 is replaced by the log frame energy, which shifts by the same log(4)
    a, b = sn.mfcc(SIGNAL), sn.mfcc(2 * SIGNAL)
    np.testing.assert_allclose(b[:, 0] - a[:, 0], np.log(4.0), atol=1e-9)
    np.testing.assert_allclose(b[:, 1:], a[:, 1:], atol=1e-9)


def test_mfcc_of_silence_is_finite_and_pcm_conversion_matches_wav_samples(test_data):
    assert np.isfinite(sn.mfcc(np.zeros(2000))).all()
    np.testing.assert_array_equal(
        sn.to_pcm16(np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, 1 / 32768], np.float32)),
        [0, 16384, -16384, 32767, -32768, 32767, 1],
    )
    ints, _ = soundfile.read(test_data / "speech.wav", dtype="int16")
    floats, _ = soundfile.read(test_data / "speech.wav", dtype="float32")
    np.testing.assert_array_equal(sn.to_pcm16(floats), ints)  # float audio gives the WAV's own samples


# ------------------------------------------------------------------------------------------- crops


def test_crops_follow_the_pipeline_geometry():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
    crops = sn.syncnet_crops(frame[None].repeat(3, 0), (100, 100, 200, 200))
    # half size 50, centre 150: rows 150 - 50 .. 150 + 50 * 1.8, columns 150 -/+ 50 * 1.4
    expected = cv2.resize(frame[100:240, 80:220], (224, 224), interpolation=cv2.INTER_LINEAR)
    assert crops.shape == (3, 224, 224, 3)
    np.testing.assert_array_equal(crops[1], expected)
    edge = sn.syncnet_crops(frame[None], (0, 300, 100, 400))[0]  # runs off the frame: grey 110 padding
    assert (edge[-10:, :, :] == 110).all() and (edge[:, :10, :] == 110).all()


# ------------------------------------------------------------------------------------------ scores


def test_offset_sign_and_scores_from_embeddings():
    rng = np.random.default_rng(1)
    lip = torch.from_numpy(rng.standard_normal((40, 16)).astype(np.float32))
    aud = torch.from_numpy(rng.standard_normal((40, 16)).astype(np.float32))
    aud[:-3] = lip[3:]  # what video window m + 3 shows, the audio says at window m: the video lags by 3
    result = sn.sync_scores(lip, aud, vshift=15)
    assert result["offset_frames"] == 3
    dist = np.array(result["mean_dist"])
    assert result["lse_d"] == pytest.approx(dist.min()) and dist.argmin() == 15 - 3
    assert result["lse_c"] == pytest.approx(np.median(dist) - dist.min()) and result["lse_c"] > 1


class _EnvelopeNet(nn.Module):
    """Stands in for SyncNet with embeddings anyone can follow: per 5-frame window, the standardised mean
    of channel 0 (blue, once the frames are BGR) of each frame; per MFCC window, the standardised log
    energy (c0) of each group of 4 steps (one video frame). Aligned windows give near-equal vectors."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    @staticmethod
    def _standardise(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=1, keepdim=True)
        return x / (x.norm(dim=1, keepdim=True) + 1e-6)

    def embed_lips(self, x: torch.Tensor) -> torch.Tensor:
        assert tuple(x.shape[1:]) == (3, 5, 224, 224)
        return self._standardise(x[:, 0].mean(dim=(2, 3)))

    def embed_audio(self, x: torch.Tensor) -> torch.Tensor:
        assert tuple(x.shape[1:]) == (1, 13, 20)
        return self._standardise(x[:, 0, 0].reshape(-1, 5, 4).mean(dim=2))


@pytest.mark.parametrize("lag", [0, 3, -4])
def test_windows_channels_and_offset_sign_end_to_end(lag):
    rng = np.random.default_rng(2)
    frames = 50
    level = rng.uniform(0.02, 1.0, frames)  # speech loudness per 40 ms
    audio = (rng.standard_normal(frames * 640) * np.repeat(level, 640) * 0.3).astype(np.float32)
    shown = np.roll(np.log(level), lag)  # the video shows frame k's mouth at frame k + lag
    blue = np.interp(shown, (shown.min(), shown.max()), (40, 220)).astype(np.uint8)
    video = rng.integers(0, 256, (frames, 48, 48, 3), dtype=np.uint8)  # red and green: noise
    video[..., 2] = blue[:, None, None]  # RGB input: blue is the last channel
    result = sn.lse_metrics(video, audio, (_EnvelopeNet(), "not-a-file"))
    assert result["windows"] == frames - 5 and result["sha256"] == "not-a-file"
    assert result["offset_frames"] == lag  # positive: the video lags the audio
    assert result["lse_c"] > 0.5 and result["lse_d"] < 0.5


def test_lse_metrics_on_the_portrait_with_synthetic_weights(test_data, synthetic_file):
    audio, rate = soundfile.read(test_data / "speech.wav", dtype="float32")
    assert rate == 16000
    count = 15  # the first 0.6 s: 10 windows keep the test short on a CPU
    audio = audio[: count * 640]
    portrait = np.asarray(Image.open(test_data / "portrait.png").convert("RGB"))
    envelope = np.sqrt(np.mean(audio[: count * 640].reshape(count, 640) ** 2, axis=1))
    frames = np.repeat(portrait[None], count, 0).astype(np.float32)
    frames[:, 160:190, 100:160] *= (1 - 2 * envelope / envelope.max())[:, None, None, None].clip(0.2, 1)
    crops = sn.syncnet_crops(frames.astype(np.uint8), (67, 67, 197, 197))  # the dlib box of the portrait
    result = sn.lse_metrics(crops, audio, sn.load_syncnet(synthetic_file))
    assert result["windows"] == count - 5
    assert np.isfinite([result["lse_d"], result["lse_c"]]).all()
    assert -15 <= result["offset_frames"] <= 15 and result["lse_c"] >= 0
    assert result["lse_d"] == pytest.approx(min(result["mean_dist"]))
    assert result["sha256"] == sha256_file(synthetic_file)


def test_lazy_crops_of_a_memory_map_score_as_the_stacked_crops(tmp_path):
    """FaceCrops (one crop at a time, from a memory map) are syncnet_crops' crops, and lse_metrics scores
    them exactly as the stacked array, in any batch size."""
    rng = np.random.default_rng(4)
    frames, audio = 40, (rng.standard_normal(40 * 640) * 0.2).astype(np.float32)
    video = rng.integers(0, 256, (frames, 96, 96, 3), dtype=np.uint8)
    boxes = np.column_stack([20 + rng.uniform(-3, 3, frames), np.full(frames, 24.0), np.full(frames, 70.0)])
    boxes = np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 0] + 50, boxes[:, 2]])
    mapped = np.memmap(tmp_path / "frames.u8", dtype=np.uint8, mode="w+", shape=video.shape)
    mapped[:] = video
    lazy = sn.FaceCrops(mapped, boxes)
    stacked = sn.syncnet_crops(video, boxes)
    assert lazy.shape == stacked.shape and len(lazy) == frames
    np.testing.assert_array_equal(lazy[7], stacked[7])
    np.testing.assert_array_equal(lazy[:], stacked)
    net = (_EnvelopeNet(), "x")
    expected = sn.lse_metrics(stacked, audio, net)
    for batch in (1, 7, 20):
        result = sn.lse_metrics(lazy, audio, net, batch_size=batch)
        assert result["mean_dist"] == pytest.approx(expected["mean_dist"], abs=1e-6)
        assert result["offset_frames"] == expected["offset_frames"]


def test_lse_metrics_holds_one_batch_of_frames_not_the_clip():
    """The float video (600 KB a frame at 224 px) is made per batch of windows: scoring 300 frames peaks
    far below their 180 MB."""
    import tracemalloc

    rng = np.random.default_rng(5)
    frames = 300
    crops = rng.integers(0, 256, (frames, 224, 224, 3), dtype=np.uint8)
    audio = (rng.standard_normal(frames * 640) * 0.2).astype(np.float32)
    tracemalloc.start()
    try:
        sn.lse_metrics(crops, audio, (_EnvelopeNet(), "x"), batch_size=20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 60e6, f"{peak / 1e6:.0f} MB"


def test_too_short_clips_are_refused_clearly():
    with pytest.raises(ValueError, match="too short for SyncNet: 5 frames"):
        sn.lse_metrics(np.zeros((5, 8, 8, 3), np.uint8), np.zeros(16000, np.float32), (_EnvelopeNet(), "x"))
