"""The typer application and the error boundary every command shares."""

from __future__ import annotations

import sys

import click
import typer

from ..exceptions import FlipguardError


def _keep_argument_help() -> None:
    """typer before 0.21 stores an argument's ``help`` and then calls click's ``Argument.__init__``
    without it, which since click 8.3 sets ``help`` back to None: every positional argument (DATA,
    OLD, NEW, LEDGER) lost its help text.  Flower's extra caps typer below 0.21, so the pair meets in
    ``flipguard[federated]`` installs; newer typer passes ``help`` on and this does nothing."""
    from typer.core import TyperArgument

    init = TyperArgument.__init__
    if getattr(init, "_keeps_help", False):
        return

    def __init__(self, *args, help=None, **kwargs):  # noqa: A002 - click's name
        init(self, *args, help=help, **kwargs)
        if help is not None and getattr(self, "help", None) is None:
            self.help = help

    __init__._keeps_help = True
    TyperArgument.__init__ = __init__


_keep_argument_help()

app = typer.Typer(
    name="flipguard",
    help="Defend supervised models against label-flipping attacks: attack, assess, audit, protect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
# click (8.2+) already says "Did you mean 'keygen'?" for a mistyped command; typer's own
# suggestion (0.16+) repeated it.  An attribute, not a keyword, so older typer ignores it.
app.suggest_commands = False

_state: dict = {"debug": False, "command": None}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (may also follow the command)."),
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
    """Console-script entry point: library errors become one ``Error: ...`` line and exit 2.

    Only the module of the command being run is imported (see ``_register``),
    and ``--debug`` is accepted anywhere before a ``--``.
    """
    from . import _register

    args = list(sys.argv[1:] if argv is None else argv)
    args = _hoist_debug(args)
    command = _command_of(args)
    _state["command"] = command
    if command is None and "--version" in args and not {"-h", "--help"} & set(args):
        from .. import __version__

        sys.stdout.write(f"flipguard {__version__}\n")
        sys.exit(0)
    _register.load(command)
    _fit_examples(app)
    from ._common import flush_notes

    flush_notes(False)
    if not isinstance(sys.stdout, _PipeSafeStdout):
        sys.stdout = _PipeSafeStdout(sys.stdout)
    try:
        code = app(args=args, prog_name="flipguard", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        sys.stdout.write(exc.ctx.get_help() + "\n")
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _usage_error(exc)
    except click.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(1)
    except FlipguardError as exc:
        _fail(exc)
    except (OSError, MemoryError) as exc:
        _fail(exc)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    flush_notes()  # the input notes of a command that ran (an error above drops them)
    # Without standalone mode click returns the code of a `typer.Exit` instead of exiting.
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


#: Widest example line in help texts: at 80 columns rich wraps longer lines to column 0.
EXAMPLE_WIDTH = 76


def _fit_examples(typer_app) -> None:
    """Break long example command lines in every help text with shell continuations (``\\``)."""
    import inspect

    for info in typer_app.registered_commands:
        fn = info.callback
        if fn is not None and fn.__doc__ and not getattr(fn, "_examples_fitted", False):
            fn.__doc__ = fit_example_lines(join_prose_lines(inspect.cleandoc(fn.__doc__)))
            fn._examples_fitted = True
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _fit_examples(group.typer_instance)


def join_prose_lines(doc: str) -> str:
    """Each prose paragraph of a help text on one line, for rich to wrap: typer's rich mode keeps a
    docstring's line breaks, so a paragraph wrapped at 100 columns in the source showed a stray break
    at 80 ("... accuracy of the" / "poisoned model").  Indented lines (examples), list items and
    blank lines are kept as they are."""
    import re

    out: list[str] = []
    for line in doc.split("\n"):
        prev = out[-1] if out else ""
        if (line.strip() and prev.strip() and not line.startswith((" ", "\b")) and not prev.startswith((" ", "\b"))
                and not re.match(r"([*-]|\d+[.)]) ", line) and not re.fullmatch(r"\w+:", prev.strip())):  # a heading ("Example:")
            out[-1] = f"{prev.rstrip()} {line.strip()}"
        else:
            out.append(line)
    return "\n".join(out)


def fit_example_lines(doc: str, width: int = EXAMPLE_WIDTH) -> str:
    """``doc`` with each indented line after ``Example`` no wider than ``width``: long lines are
    split before an option (``--x``) and continued with a trailing backslash, indented 4 more."""
    out: list[str] = []
    in_example = False
    for line in doc.split("\n"):
        if line.strip().lower().startswith("example"):
            in_example = True
        elif line and not line.startswith(" "):
            in_example = False
        continued = bool(out) and out[-1].endswith("\\")
        while in_example and len(line) > width and line.startswith(" "):
            indent = len(line) - len(line.lstrip())
            cut = line.rfind(" --", indent + 1, width - 1)
            if cut <= indent:
                cut = line.rfind(" ", indent + 1, width - 1)
            if cut <= indent:
                break
            out.append(line[:cut] + " \\")
            line = " " * (indent if continued else indent + 4) + line[cut + 1:]
            continued = True
        out.append(line)
    return "\n".join(out)


def _hoist_debug(args: list[str]) -> list[str]:
    """Move every ``--debug`` before ``--`` to the front, where the root callback reads it."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug"] + [a for a in args[:end] if a != "--debug"] + args[end:]


def _command_of(args: list[str]) -> str | None:
    """The subcommand name: the first argument that is not a root option (None: none given, or help)."""
    for a in args:
        if a in ("-h", "--help"):
            return None
        if not a.startswith("-"):
            return a
    return None


def _usage_error(exc: click.ClickException) -> None:
    """A usage error (missing or unknown option, bad value) as one ``Error: ...`` line, exit 2.

    click prints the usage, a hint and a framed message on several lines; a CI log wants one
    line, like every other input error, and the help command to run.
    """
    msg = exc.format_message().strip().replace("\n", " ")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and isinstance(exc, click.UsageError):
        msg = f"{ctx.command_path}: {msg} (see '{ctx.command_path} -h')"
    sys.stderr.write(f"Error: {msg}\n")
    sys.exit(exc.exit_code)


class _PipeSafeStdout:
    """``sys.stdout`` for a command: once the reader of stdout goes away (``| head``) the rest goes
    to /dev/null, so the command still writes its files and exits with its own code (Python raised
    BrokenPipeError at the next print, which typer turned into exit 1 or the boundary into 2)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        import os

        self._gone = True
        try:  # what is still buffered is flushed at exit, to /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
        except (AttributeError, OSError, ValueError):  # not a real file (captured output)
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _fail(exc: BaseException) -> None:
    if _state["debug"]:  # the traceback, and still the input-error exit code a CI job routes on
        import traceback

        traceback.print_exception(exc)
        sys.exit(2)
    from ._words import in_user_words

    msg = str(exc).strip().replace("\n", " ") or type(exc).__name__
    if isinstance(exc, FlipguardError):
        msg = in_user_words(msg, _state["command"])
    sys.stderr.write(f"Error: {msg}\n")
    sys.exit(2)
