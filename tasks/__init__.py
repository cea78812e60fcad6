"""Prefect tasks of the batch pipeline, one short typed task per stage.

Each task reads its inputs by URI, calls one function of ``sadtalker.pipeline``, writes its artefact
atomically through ``sadtalker.storage`` and returns a small record (URIs, hashes, counts, timings):

- :func:`load_manifest`: read + validate the manifest;
- :func:`extract_face_task`: photo -> crop + 3DMM (content-addressed cache);
- :func:`coefficients_task`: audio + face -> (T, 70) coefficients (content-addressed cache);
- :func:`render_task`: face + coefficients -> video (GPU slot on CUDA; resumable by its render record);
- :func:`qc_task`: checks on the written video.

Retries: transient faults only (``tasks.common.retry_if_transient``); bad input is never retried.
"""

from flows.settings import apply_offline_defaults
from sadtalker.storage import install_log_redaction

apply_offline_defaults()  # before Prefect is imported
install_log_redaction()

from tasks.coeffs import coefficients_task  # noqa: E402
from tasks.face import extract_face_task  # noqa: E402
from tasks.load import load_manifest  # noqa: E402
from tasks.qc import qc_task  # noqa: E402
from tasks.records import StageContext, StoredCoeffs, StoredFace, StoredQC, StoredRender  # noqa: E402
from tasks.render import render_task  # noqa: E402

__all__ = [
    "StageContext",
    "StoredCoeffs",
    "StoredFace",
    "StoredQC",
    "StoredRender",
    "coefficients_task",
    "extract_face_task",
    "load_manifest",
    "qc_task",
    "render_task",
]
