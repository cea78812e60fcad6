"""Prefect flows of the batch pipeline: ``render_batch`` (flows.render_batch), task runners (flows.runners),
the command line (flows.cli) and the demo (flows.demo). Importing ``tasks`` first applies the project's
offline Prefect settings (tasks.settings) and log redaction, before anything imports Prefect."""

import tasks  # noqa: F401
