"""The ``speechtrt`` command line: one Typer app, each command in ``speechtrt/commands/<name>.py``.

A :class:`~speechtrt.errors.SpeechTRTError` raised anywhere below becomes one red line on stderr and exit code 1;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer
from rich.console import Console

from speechtrt import __version__
from speechtrt.errors import SpeechTRTError

# Tables printed to a file or a CI log would otherwise wrap at 80 columns and truncate component names.
if not sys.stdout.isatty():
    os.environ.setdefault("COLUMNS", "160")

app = typer.Typer(
    name="speechtrt",
    help="Export, quantize, compile, serve, benchmark and evaluate speech models with TensorRT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, in the order of the pipeline. Each defines ``register(app)``.
COMMAND_MODULES = ("export", "data", "calibrate", "build", "bench", "profile", "train", "eval", "stream", "tts", "serve",
                   "loadtest", "triton", "gpu-report")

for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"speechtrt.commands.{_name.replace('-', '_')}")
    except ModuleNotFoundError as exc:  # a command module not written yet
        if exc.name != f"speechtrt.commands.{_name}":
            raise
        continue
    _mod.register(app)


@app.callback(invoke_without_command=True)
def _main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(f"speechtrt {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console entry point: run the app, turning project errors into a one-line message and exit code 1."""
    err = Console(stderr=True)
    try:
        app(standalone_mode=False)
    except SpeechTRTError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err.print("[red]aborted[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # usage errors (bad flag, out-of-range value) print their own usage message, exit 2
        if _is_usage_error(exc):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def _is_usage_error(exc: Exception) -> bool:
    """Click's usage errors, from click itself or from the copy of click newer Typer versions carry."""
    import click

    bases = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as TyperClickException

        bases.append(TyperClickException)
    except ImportError:
        pass
    return isinstance(exc, tuple(bases))


if __name__ == "__main__":
    main()
