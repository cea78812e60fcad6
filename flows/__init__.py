"""Prefect flows of the batch pipeline: ``render_batch`` (flows.render_batch), task runners (flows.runners),
the command line (flows.cli), the demo (flows.demo) and the project's offline Prefect settings
(flows.settings, applied here, before anything imports Prefect)."""

from flows.settings import apply_offline_defaults
from sadtalker.redaction import install_log_redaction

apply_offline_defaults()
install_log_redaction()
