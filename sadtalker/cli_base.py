"""What the project's command lines share (``sadtalker``, ``sadtalker-batch``, ``python -m
sadtalker.weights``): typer apps built alike, run to an exit status, and ``--version``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from sadtalker.versions import version_text

__all__ = ["new_app", "run_app"]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


# The callback of a top-level group: it only holds --version (no docstring: the group's help is new_app's).
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the versions of this project, Python and its libraries (to label a result), "
            "and exit.",
        ),
    ] = False,
) -> None:
    pass


def new_app(help: str, *, version: bool = True, single: bool = False) -> typer.Typer:
    """A command group; ``version``: with a ``--version`` option (top-level commands); ``single``: one
    command, run without naming it (and without arguments).

    ``-h`` / ``--help``; plain text help and errors (no rich panels: a usage error is one ``Error: ...``
    line, readable in a log); no shell-completion options; Python's own tracebacks.
    """
    app = typer.Typer(
        help=help,
        no_args_is_help=not single,
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    if version:
        app.callback()(_root)
    return app


def run_app(app: typer.Typer, argv: Sequence[str] | None, prog: str) -> int:
    """Run ``app`` on ``argv`` (default: ``sys.argv[1:]``); its exit status: a command's ``typer.Exit`` code,
    0 after ``--help`` / ``--version``, 2 for a usage error (unknown option, bad value)."""
    try:
        app(args=None if argv is None else list(argv), prog_name=prog)
    except SystemExit as exc:  # typer exits through sys.exit, whatever the status
        return int(exc.code or 0)
    return 0
