"""The typer application and the error boundary every command shares."""

from __future__ import annotations

import sys

import typer

from ..exceptions import FlipguardError

app = typer.Typer(
    name="flipguard",
    help="Defend supervised models against label-flipping attacks: attack, assess, audit, protect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                 is_eager=True, callback=lambda v: _print_version(v)),
) -> None:
    """Defend supervised models against label-flipping attacks.

    Exit codes: 0 clean/done, 1 a finding (tampering, suspects above a threshold),
    2 a usage or input error.
    """
    _state["debug"] = debug


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"flipguard {__version__}")
        raise typer.Exit(0)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: library errors become one ``Error: ...`` line and exit 2."""
    from . import _register  # noqa: F401  (imports every command module)

    try:
        app(args=argv, prog_name="flipguard")
    except FlipguardError as exc:
        _fail(exc)
    except (OSError, MemoryError) as exc:
        _fail(exc)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)


def _fail(exc: BaseException) -> None:
    if _state["debug"]:
        raise exc
    msg = str(exc).strip().replace("\n", " ") or type(exc).__name__
    sys.stderr.write(f"Error: {msg}\n")
    sys.exit(2)
