"""Prefect tasks of the batch pipeline, one short typed task per stage.

Each task reads its inputs by URI, calls one function of ``sadtalker.pipeline``, writes its artefact
atomically through ``sadtalker.storage`` and returns a small record (``tasks.records``: URIs, hashes,
counts, timings):

- ``tasks.load.load_manifest``: read + validate the manifest;
- ``tasks.face.extract_face_task``: photo -> crop + 3DMM (content-addressed cache, ``tasks.cache``);
- ``tasks.coeffs.coefficients_task``: audio + face -> (T, 70) coefficients (content-addressed cache);
- ``tasks.render.render_task``: face + coefficients -> video (GPU slot on CUDA, ``tasks.devices``;
  resumable by its render record);
- ``tasks.qc.qc_task``: checks on the written video.

Every stage task is ``@task(**STAGE_TASK_OPTIONS)`` (``tasks.retry``: transient faults only are retried;
bad input never), ``@redact_errors`` (``tasks.logs``) and ``@timed_stage`` (``tasks.deadlines``).

A task body imports ``sadtalker.pipeline`` and ``sadtalker.loader`` when it runs, not at the top of its
module: importing the tasks (the flow process, the CLI) must not import torch. The orchestration tests
rely on that too: they put a fake module in ``sys.modules`` under those names (tests/pipeline_fakes.py).

Importing this package applies the project's offline Prefect settings (``tasks.settings``) before
anything imports Prefect, and passes every log record through ``sadtalker.redaction.redact``; it imports
no Prefect itself, so ``flows.demo`` can still choose Prefect's home folder after importing it.
"""

from sadtalker.redaction import install_log_redaction
from tasks.settings import apply_offline_defaults

apply_offline_defaults()  # before Prefect is imported
install_log_redaction()
