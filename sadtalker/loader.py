"""The per-process loader: which weight files to use, and every network loaded once (:class:`Models`).

:class:`Models` resolves which checkpoint files to use under a **weights policy** (``official``,
``synthetic`` or ``auto``; argument, else ``$SADTALKER_WEIGHTS_POLICY``, else ``auto``), loads each network
once, and hands the same instances to every later call in the process.

One render configuration (size, preprocess family) always runs on **one resolved set**: the size's
``SadTalker_V0.0.2_<size>.safetensors`` (3DMM regressor, ExpNet, PoseVAE, keypoint detector, generator) and
the family's mapping net, both official or both synthetic, never a mix:

- ``official``: the files the configuration needs must be in the weights folder with their official
  SHA-256; otherwise :class:`WeightsError` naming each missing file and the command that fetches it.
- ``synthetic``: deterministic synthetic files (seed 0), whatever the folder holds.
- ``auto``: the official files when the size's whole official set is there (its safetensors file and both
  mapping files), else synthetic files for every configuration of that size, said loudly. Deciding per
  size, not per file, is what keeps a partial set (say ``mapping_00229`` missing) from giving full-mode
  rows official mapping nets on synthetic networks.

A present official file whose hash is wrong is always an error, never replaced. :class:`WeightSet` names
exactly the files loaded (``files``, ``sha256``, ``label``): that is what results and cache keys record.
:func:`check_weights` resolves and verifies the sets of a batch before any row work.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from sadtalker.errors import WeightsError
from sadtalker.hashing import sha256_file
from sadtalker.networks import file_layout, load_file
from sadtalker.options import PREPROCESS_MODES, WEIGHTS_POLICIES
from sadtalker.weights.registry import WeightFile, cache_dir, mapping_file, sadtalker_file
from sadtalker.weights.synthetic import SYNTHETIC_WARNING, ensure_synthetic_checkpoints

log = logging.getLogger(__name__)

SYNTHETIC_SEED = 0
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: Environment variable read when no policy is given (default ``auto``).
WEIGHTS_POLICY_ENV = "SADTALKER_WEIGHTS_POLICY"


def resolve_policy(policy: str | None = None) -> str:
    """``policy``, else ``$SADTALKER_WEIGHTS_POLICY``, else ``auto``; checked.

    Raises:
        WeightsError: not one of ``official``, ``synthetic``, ``auto``.
    """
    source = "weights policy" if policy is not None else f"${WEIGHTS_POLICY_ENV}"
    value = (policy if policy is not None else os.environ.get(WEIGHTS_POLICY_ENV) or "auto").strip().lower()
    if value not in WEIGHTS_POLICIES:
        raise WeightsError(f"{source} {value!r}: choose official, synthetic or auto")
    return value


def family(preprocess: str) -> str:
    """``full`` for the paste-back modes (mapping_00109), ``crop`` for the others (mapping_00229)."""
    if preprocess not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess {preprocess!r}")
    return "full" if "full" in preprocess else "crop"


@dataclass(frozen=True)
class WeightSet:
    """The two files one render configuration loads, where they come from, and their SHA-256.

    Attributes:
        sadtalker: ``SadTalker_V0.0.2_<size>.safetensors`` (every network but the mapping net).
        mapping: ``mapping_00229`` (coeff_nc 70) or ``mapping_00109`` (coeff_nc 73).
        synthetic: both files are synthetic (never one of them only).
        sha256: ``{file name: SHA-256}`` of exactly these two files.
        seed: the synthetic seed (None for official files).
        missing: official files whose absence made ``auto`` choose synthetic files (empty otherwise).
    """

    sadtalker: Path
    mapping: Path
    synthetic: bool
    sha256: dict[str, str]
    seed: int | None = None
    missing: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``official`` or ``synthetic`` (the QC record's ``weights`` field)."""
        return "synthetic" if self.synthetic else "official"

    @property
    def label(self) -> str:
        """A stable name of exactly these files: ``official:<sha12>+<sha12>`` or
        ``synthetic:seed0:<sha12>+<sha12>`` (safetensors file first, then the mapping file)."""
        digests = "+".join(self.sha256[p.name][:12] for p in (self.sadtalker, self.mapping))
        return f"synthetic:seed{self.seed}:{digests}" if self.synthetic else f"official:{digests}"

    @property
    def files(self) -> tuple[dict[str, str], ...]:
        """``({"name", "path", "sha256"}, ...)`` of the files loaded, safetensors file first."""
        return tuple(
            {"name": p.name, "path": str(p), "sha256": self.sha256[p.name]}
            for p in (self.sadtalker, self.mapping)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: kind, label, files, seed, missing."""
        return {
            "kind": self.kind,
            "label": self.label,
            "files": list(self.files),
            "seed": self.seed,
            "missing": list(self.missing),
        }


@dataclass(frozen=True)
class WeightReport:
    """What :func:`check_weights` resolved: one :class:`WeightSet` per ``"<size>/<family>"``."""

    policy: str
    folder: Path
    sets: dict[str, WeightSet]
    missing: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def kind(self) -> str:
        """``official``, ``synthetic``, ``mixed`` (some configurations official, others synthetic), or
        ``none`` (no configuration: a manifest without valid rows)."""
        kinds = {ws.kind for ws in self.sets.values()}
        return "none" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def synthetic(self) -> bool:
        """True when any configuration runs on synthetic weights."""
        return any(ws.synthetic for ws in self.sets.values())

    @property
    def labels(self) -> dict[str, str]:
        return {key: ws.label for key, ws in self.sets.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for ``batch.json``."""
        return {
            "policy": self.policy,
            "kind": self.kind,
            "folder": str(self.folder),
            "missing": list(self.missing),
            "warnings": list(self.warnings),
            "sets": {key: ws.to_dict() for key, ws in self.sets.items()},
        }


def weights_folder() -> Path:
    """``$SADTALKER_WEIGHTS`` if set, else the cache (``$SADTALKER_HOME`` or ``~/.cache/sadtalker``)."""
    return Path(os.environ.get("SADTALKER_WEIGHTS") or cache_dir())


def size_official_set(size: int) -> tuple[WeightFile, ...]:
    """The official files every configuration of ``size`` may use: its safetensors file, both mappings."""
    return (sadtalker_file(size), mapping_file("crop"), mapping_file("full"))


def fetch_command(names: Iterable[str], folder: Path | None = None) -> str:
    """The command that fetches ``names`` into ``folder`` (``--dest`` only when it is not the cache)."""
    folder = folder or weights_folder()
    dest = "" if Path(folder) == cache_dir() else f" --dest {folder}"
    return f"sadtalker-batch weights fetch {' '.join(names)}{dest}"


def _missing_error(missing: Iterable[str], folder: Path, policy: str) -> WeightsError:
    names = list(dict.fromkeys(missing))
    return WeightsError(
        f"weights policy {policy!r}: official weights missing in {folder}: {', '.join(names)}; "
        f"fetch them with `{fetch_command(names, folder)}` (or run with the `auto` or `synthetic` policy "
        "to render noise-like test videos)"
    )


def _verified(path: Path, item: WeightFile) -> str:
    """SHA-256 of an official file, checked against the registry (read once, then remembered beside it
    while the file is unchanged: :func:`sadtalker.hashing.sha256_file`)."""
    actual = sha256_file(path, remember=True)
    if item.sha256 and actual != item.sha256:
        raise WeightsError(
            f"{path}: SHA-256 {actual} does not match the official {item.sha256}; "
            f"delete it and fetch again ({fetch_command([item.name], path.parent)})"
        )
    return actual


def _official_paths(items: Sequence[WeightFile], folder: Path) -> tuple[list[Path], dict[str, str]]:
    paths = [folder / item.name for item in items]
    return paths, {p.name: _verified(p, item) for p, item in zip(paths, items, strict=True)}


def _synthetic_paths(items: Sequence[WeightFile], seed: int) -> tuple[list[Path], dict[str, str]]:
    names = [item.name for item in items]
    folder = ensure_synthetic_checkpoints(seed, names, layout=file_layout)
    paths = [folder / name for name in names]
    return paths, {p.name: sha256_file(p, remember=True) for p in paths}


def _choose_synthetic(
    size: int, needed: Iterable[WeightFile], folder: Path, policy: str
) -> tuple[bool, tuple]:
    """Whether the configuration (``needed``: its official files) runs on synthetic files, and which
    official files were missing. The same answer for every configuration of a size under ``auto``."""
    if policy == "synthetic":
        return True, ()
    if policy == "official":
        missing = [item.name for item in needed if not (folder / item.name).is_file()]
        if missing:
            raise _missing_error(missing, folder, policy)
        return False, ()
    missing = tuple(item.name for item in size_official_set(size) if not (folder / item.name).is_file())
    return bool(missing), missing


_WARNED: set[tuple] = set()
_WARNED_LOCK = threading.Lock()


def _warn_synthetic(size: int, missing: tuple[str, ...], folder: Path, policy: str) -> None:
    # Once per process and situation: every resolution of the same sets would repeat the same paragraph
    # (the flow's check, then each family's Models), burying it instead of making it loud.
    with _WARNED_LOCK:
        if (size, missing, str(folder), policy) in _WARNED:
            return
        _WARNED.add((size, missing, str(folder), policy))
    if policy == "synthetic":
        log.warning("%s (weights policy 'synthetic')", SYNTHETIC_WARNING)
        return
    present = [f.name for f in size_official_set(size) if f.name not in missing]
    partial = f"; a PARTIAL official set is there ({', '.join(present)}) and is NOT used" if present else ""
    log.warning(
        "%s: every %d px render uses synthetic files (weights policy 'auto': official %s missing in %s%s, "
        "and one render never mixes official and synthetic networks); fetch them with `%s`, or use the "
        "'official' policy to refuse instead",
        SYNTHETIC_WARNING,
        size,
        ", ".join(missing),
        folder,
        partial,
        fetch_command(missing, folder),
    )


def resolve_weights(
    size: int,
    preprocess: str,
    folder: Path | None = None,
    allow_synthetic: bool = True,
    policy: str | None = None,
) -> WeightSet:
    """The verified set of one render configuration under the weights policy (see the module docstring).

    Args:
        size: 256 or 512.
        preprocess: the crop mode (its family picks the mapping file).
        folder: where official files are (default :func:`weights_folder`).
        allow_synthetic: False forces the ``official`` policy.
        policy: ``official`` | ``synthetic`` | ``auto``; default ``$SADTALKER_WEIGHTS_POLICY`` or ``auto``.

    Raises:
        WeightsError: an official file is present but its hash is wrong; or the policy is ``official`` and
            a file the configuration needs is missing (the message names each one and the fetch command).
    """
    policy = "official" if not allow_synthetic else resolve_policy(policy)
    folder = Path(folder or weights_folder())
    wanted = (sadtalker_file(size), mapping_file(preprocess))
    synthetic, missing = _choose_synthetic(size, wanted, folder, policy)
    if not synthetic:
        paths, sha = _official_paths(wanted, folder)
        return WeightSet(paths[0], paths[1], synthetic=False, sha256=sha)
    _warn_synthetic(size, missing, folder, policy)
    paths, sha = _synthetic_paths(wanted, SYNTHETIC_SEED)
    return WeightSet(paths[0], paths[1], synthetic=True, sha256=sha, seed=SYNTHETIC_SEED, missing=missing)


@dataclass(frozen=True)
class _SizeNetworks:
    """The networks of ``SadTalker_V0.0.2_<size>.safetensors``, by their names in the builder table."""

    kp_extractor: torch.nn.Module
    generator: torch.nn.Module
    audio2exp: torch.nn.Module
    audio2pose: torch.nn.Module
    face_3drecon: torch.nn.Module


class Models:
    """Every network one process needs, loaded once and shared (thread-safe).

    Args:
        weights: folder of the official files (default :func:`weights_folder`).
        allow_synthetic: False forces the ``official`` policy (kept for older callers).
        landmarker: ``auto`` | ``face-alignment`` | ``dlib``.
        weights_policy: ``official`` | ``synthetic`` | ``auto``; default ``$SADTALKER_WEIGHTS_POLICY`` or
            ``auto`` (read when the instance is built).
    """

    _shared: ClassVar[dict[str, Models]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        weights: Path | None = None,
        allow_synthetic: bool = True,
        landmarker: str = "auto",
        weights_policy: str | None = None,
    ):
        self.folder = weights
        self.weights_policy = "official" if not allow_synthetic else resolve_policy(weights_policy)
        self.allow_synthetic = self.weights_policy != "official"
        self.landmarker_name = landmarker
        # One lock per cache entry, so that a first use waits only for what it needs (the 256 networks do
        # not wait for the 512 ones) and every entry is still built exactly once.
        self._lock = threading.Lock()
        # Resolving sets hashes 725 MB files and may write synthetic ones: one resolution at a time.
        self._resolve_lock = threading.Lock()
        self._entry_locks: dict[tuple, threading.Lock] = {}
        self._cache: dict[tuple, object] = {}

    @classmethod
    def shared(cls, weights_policy: str | None = None) -> Models:
        """The per-process instance for the policy (default ``$SADTALKER_WEIGHTS_POLICY`` or ``auto``)
        used by the pipeline and the Prefect tasks."""
        policy = resolve_policy(weights_policy)
        with cls._shared_lock:
            if policy not in cls._shared:
                cls._shared[policy] = cls(weights_policy=policy)
            return cls._shared[policy]

    def _get(self, key: tuple, build):
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            entry = self._entry_locks.setdefault(key, threading.Lock())
        with entry:
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            value = build()  # outside the instance lock: builds of other keys go on meanwhile
            with self._lock:
                self._cache[key] = value
            return value

    @property
    def _folder(self) -> Path:
        return Path(self.folder or weights_folder())

    def weights(self, size: int, preprocess: str) -> WeightSet:
        """The verified set of the configuration (resolved, and hashed, once per process)."""

        def resolve() -> WeightSet:
            with self._resolve_lock:
                return resolve_weights(size, preprocess, self._folder, policy=self.weights_policy)

        return self._get(("weights", size, family(preprocess)), resolve)

    def weights_label(self, size: int, preprocess: str) -> str:
        """:attr:`WeightSet.label` of the configuration, e.g. ``official:c211f5d6de00+62a1e06006cc``."""
        return self.weights(size, preprocess).label

    def check_weights(
        self, sizes: Iterable[int], preprocesses: Iterable[str], enhancers: Iterable[str] = ()
    ) -> WeightReport:
        """Resolve and verify every configuration's set before any row work (no network is loaded), and
        the file of each face enhancer the batch uses (``gfpgan``; ``none`` needs nothing).

        Raises:
            WeightsError: under ``official``, one error naming every missing file of every configuration and
                the command that fetches them all; a present official file with a wrong hash (any policy);
                an official configuration whose enhancer file is missing.
        """
        from sadtalker.enhance.weights import enhancer_file

        sizes = sorted(set(sizes))
        families = sorted({family(p) for p in preprocesses})
        enhancers = sorted(set(enhancers) - {"none"})
        folder = self._folder
        if self.weights_policy == "official":
            needed = [
                *(
                    item
                    for size in sizes
                    for item in (sadtalker_file(size), *(mapping_file(f) for f in families))
                ),
                *(enhancer_file(name) for name in enhancers if sizes),
            ]
            missing = list(dict.fromkeys(item.name for item in needed if not (folder / item.name).is_file()))
            if missing:
                raise _missing_error(missing, folder, self.weights_policy)
        sets = {f"{size}/{fam}": self.weights(size, fam) for size in sizes for fam in families}
        for name in enhancers:  # verified (hash) now; an official render never takes a synthetic enhancer
            for size in sizes:
                for fam in families:
                    self.enhancer_weights(name, size, fam)
        missing = tuple(dict.fromkeys(name for ws in sets.values() for name in ws.missing))
        warnings = []
        if missing:
            warnings.append(
                f"official {', '.join(missing)} missing in {folder}: "
                + ", ".join(k for k, ws in sets.items() if ws.synthetic)
                + f" run on SYNTHETIC weights; fetch with `{fetch_command(missing, folder)}`"
            )
        elif self.weights_policy == "synthetic":
            warnings.append("weights policy 'synthetic': every video is noise-like, not a face")
        return WeightReport(self.weights_policy, folder, sets, missing, tuple(warnings))

    @property
    def synthetic(self) -> bool:
        """True when any weights this instance resolved are synthetic."""
        with self._lock:
            return any(v.synthetic for k, v in self._cache.items() if k[0] == "weights")

    def _size_file(self, size: int) -> tuple[Path, str]:
        """The safetensors file every configuration of ``size`` uses, and its SHA-256: the one in
        :meth:`weights`'s sets (same policy rule, so all families agree), resolved without needing a mapping
        file (an ``official`` full-mode-only batch has no mapping_00229)."""

        def resolve() -> tuple[Path, str]:
            with self._resolve_lock:
                return _resolve()

        def _resolve() -> tuple[Path, str]:
            item = sadtalker_file(size)
            synthetic, missing = _choose_synthetic(size, (item,), self._folder, self.weights_policy)
            if synthetic:
                _warn_synthetic(size, missing, self._folder, self.weights_policy)
                paths, sha = _synthetic_paths((item,), SYNTHETIC_SEED)
            else:
                paths, sha = _official_paths((item,), self._folder)
            return paths[0], sha[paths[0].name]

        return self._get(("size_file", size), resolve)

    def _networks(self, size: int) -> _SizeNetworks:
        """Every network stored in ``SadTalker_V0.0.2_<size>.safetensors``, built on the CPU in one pass so
        that the 725 MB file is read once and its tensors are dropped right after loading. Keyed by the
        file actually loaded, so official and synthetic networks can never be confused."""
        path, sha = self._size_file(size)

        def build() -> _SizeNetworks:
            return _SizeNetworks(**load_file(path, file=sadtalker_file(size)))

        return self._get(("networks", str(path), sha), build)

    def _check_same_set(self, size: int, preprocess: str) -> WeightSet:
        """The configuration's set, checked to hold the very safetensors file the networks come from."""
        weight_set = self.weights(size, preprocess)
        path, sha = self._size_file(size)
        if weight_set.sadtalker != path or weight_set.sha256.get(path.name) != sha:
            raise WeightsError(
                f"weights changed during the process: {size}/{family(preprocess)} resolved "
                f"{weight_set.sadtalker} but the networks were loaded from {path}; restart the worker"
            )
        return weight_set

    def audio_networks(self, size: int):
        """(ExpNet, PoseVAE) in eval mode on the CPU (they cost milliseconds per frame)."""
        networks = self._networks(size)
        return networks.audio2exp, networks.audio2pose

    def recon_network(self, size: int):
        """The 3DMM regressor in eval mode on the CPU."""
        return self._networks(size).face_3drecon

    def landmarker_identity(self) -> dict[str, str]:
        """``{"backend": "face-alignment" | "dlib", "weights": SHA-256 over its files}`` of the landmarker
        this instance uses (:func:`sadtalker.face.landmarks.landmarker_identity`): decided (``auto``) and
        hashed once per process, without building the backend. Face cache keys include it, so a worker that
        fell back to dlib never reuses (or overwrites) the faces face-alignment found, nor the reverse."""
        from sadtalker.face.landmarks import landmarker_identity

        identity = self._get(
            ("landmarker_identity", self.landmarker_name), lambda: landmarker_identity(self.landmarker_name)
        )
        return dict(identity)

    def landmarker(self):
        """The face detector + 68-landmark backend (``auto``: face-alignment when its weights are cached,
        else the offline dlib backend): the one :meth:`landmarker_identity` names, checked to be it."""
        from sadtalker.face.landmarks import make_landmarker

        def build():
            identity = self.landmarker_identity()
            backend = make_landmarker(identity["backend"])
            if backend.identity != identity:
                raise WeightsError(
                    f"landmark weights changed during the process: {identity} was decided, but the "
                    f"{backend.name} backend loaded {backend.identity}; restart the worker"
                )
            return backend

        return self._get(("landmarker", self.landmarker_name), build)

    def animator(
        self, size: int, preprocess: str, device: str = "cpu", dtype: str = "float32", compile: bool = False
    ):
        """The face renderer engine (mapping net + keypoint detector + generator) on ``device``.

        Each (size, family, device, dtype, compile) has its own engine. The size's networks stay on the CPU
        (the 3DMM regressor, ExpNet and PoseVAE run there, and CPU engines use them as they are); an engine
        on another device gets its own copies, because ``Module.to`` moves a module in place. ``compile``:
        the engine renders through ``torch.compile`` (:func:`sadtalker.render.generator.compile_frames`).
        """
        from sadtalker.render.animate import FaceAnimator

        def build():
            networks = self._networks(size)
            weight_set = self.weights(size, preprocess)
            (mapping,) = load_file(weight_set.mapping, file=mapping_file(preprocess)).values()
            autocast = None if dtype == "float32" else _DTYPES[dtype]
            return FaceAnimator(
                _on_device(networks.kp_extractor, device),
                _on_device(networks.generator, device),
                mapping.to(device),  # built for this engine alone
                autocast_dtype=autocast,
                compile=compile,
            )

        return self._get(("animator", size, family(preprocess), device, dtype, compile), build)

    def enhancer_weights(self, name: str, size: int, preprocess: str):
        """The file the face enhancer ``name`` (``gfpgan``) loads for renders of this configuration: official
        when the configuration's set is official (then it must be present, with its SHA-256), synthetic when
        the set is synthetic: one render never mixes the two (:mod:`sadtalker.enhance.weights`).

        Raises:
            WeightsError: the render is official and the enhancer's file is missing or has a wrong hash.
        """
        from sadtalker.enhance.weights import resolve_enhancer_weights

        weight_set = self.weights(size, preprocess)

        def resolve():
            with self._resolve_lock:
                return resolve_enhancer_weights(name, self._folder, weight_set.synthetic, SYNTHETIC_SEED)

        return self._get(("enhancer_weights", name, weight_set.synthetic), resolve)

    def enhancer(self, name: str, size: int, preprocess: str, device: str = "cpu"):
        """The face enhancer ``name`` in eval mode on ``device`` (float32), loaded once per process and
        device; None for ``none``."""
        if name == "none":
            return None
        from sadtalker.enhance.gfpgan import load_gfpgan

        files = self.enhancer_weights(name, size, preprocess)
        return self._get(
            ("enhancer", name, str(files.path), files.sha256, device), lambda: load_gfpgan(files.path, device)
        )


def _on_device(module: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """``module`` itself when every tensor is already on ``device``, else a moved deep copy (the shared
    CPU module is never moved)."""
    target = torch.device(device)
    tensors = [*module.parameters(), *module.buffers()]
    if all(_same_device(t.device, target) for t in tensors):
        return module
    return copy.deepcopy(module).to(target)


def _same_device(actual: torch.device, target: torch.device) -> bool:
    if actual.type != target.type:
        return False
    # "cuda" means the current CUDA device: compare indices only when the target names one
    return target.index is None or actual.index == target.index


def check_weights(
    policy: str | None = None,
    sizes: Iterable[int] = (256,),
    preprocesses: Iterable[str] = ("crop",),
    folder: Path | None = None,
    enhancers: Iterable[str] = (),
) -> WeightReport:
    """Resolve and verify the weight sets a batch will use, before any row work.

    Loads no network and builds nothing shared (a flow process that only orchestrates stays light); the
    files' hashes are cached per process, so workers in the same process do not hash them again. The
    workers resolve the same sets by the same rule, and each row records the set it actually used.

    Args:
        policy: ``official`` | ``synthetic`` | ``auto``; default ``$SADTALKER_WEIGHTS_POLICY`` or ``auto``.
        sizes: the render sizes of the batch's rows.
        preprocesses: their crop modes (or families ``crop`` / ``full``).
        folder: where the official files are (default :func:`weights_folder`).
        enhancers: the face enhancers of the batch's rows (``none``, ``gfpgan``).

    Raises:
        WeightsError: under ``official``, naming every missing file and the fetch command; a tampered file;
            an unknown policy.
    """
    return Models(folder, weights_policy=policy).check_weights(sizes, preprocesses, enhancers)
