"""The ``tierbook`` command: one error boundary, one module per command group.

Heavy modules (Polars, the pipeline) are imported inside the commands, so
``tierbook --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import CLI_WORDS, TierbookError, speaking

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"tierbook: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _distribution_version(module: str) -> str | None:
    """The installed version of the distribution that provides ``module``, read without importing it."""
    import importlib.metadata as md

    for name in [module, *(md.packages_distributions().get(module) or [])]:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def version_text() -> str:
    """What ``tierbook --version`` prints: tierbook, then what a bug report needs about its environment.

    Versions are read from the installed metadata, so ``--version`` answers without importing Polars.
    """
    import platform
    from pathlib import Path

    here = Path(__file__).resolve().parents[1]
    lines = [f"tierbook {_distribution_version('tierbook') or '(not installed)'} ({here})",
             f"Python {platform.python_version()} ({platform.python_implementation()}, {sys.executable}) "
             f"on {platform.system()} {platform.machine()}"]
    deps = [f"{name} {_distribution_version(module) or '(not installed)'}"
            for name, module in (("Polars", "polars"), ("pluggy", "pluggy"), ("PyYAML", "yaml"),
                                 ("ruamel.yaml", "ruamel.yaml"))]
    lines.append(", ".join(deps))
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from .output import say_block

        say_block(version_text())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    from . import classify as classify_cmd
    from . import plugins as plugins_cmd

    parser = _Parser(
        prog="tierbook",
        description="Classify customers from their transactions with classifier plugins and turn classes into actions.",
    )
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of errors")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of tierbook, Python, Polars and pluggy, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    classify_cmd.add_commands(sub)
    plugins_cmd.add_commands(sub)
    for module in _optional_command_modules():
        module.add_commands(sub)
    return parser


def _optional_command_modules():
    """Command groups that live in their own modules (playbooks, ...)."""
    import importlib

    mods = []
    for name in ("playbook", "report", "measure"):
        try:
            mods.append(importlib.import_module(f".{name}", __name__))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    return mods


def one_line(exc: TierbookError) -> str:
    """The message with line breaks and other control characters from the data escaped.

    Each error is one line; only a playbook's list of problems has one line per problem.

    >>> one_line(TierbookError("columns: a, b\\nc\\x1b[2J"))
    'columns: a, b\\\\nc\\\\x1b[2J'
    """
    from .output import safe

    problems = getattr(exc, "problems", None) or [str(exc)]
    return "\n".join(safe(p) for p in problems)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    traceback = args.traceback or os.environ.get("TIERBOOK_TRACEBACK") == "1"
    try:
        with speaking(CLI_WORDS):  # messages name options as this command line does: --as-of, --set ...
            return int(args.func(args) or 0)
    except TierbookError as exc:
        if traceback:
            raise
        from .output import say_block

        say_block(f"tierbook: error: {one_line(exc)}", file=sys.stderr)  # one_line made each problem safe
        return exc.exit_code
    except KeyboardInterrupt:
        from .output import say

        say("tierbook: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    """The ``tierbook`` command: :func:`main`, then exit at once.

    Every output is written, flushed to disk and renamed into place before
    :func:`main` returns; what is left is freeing the memory of the customer
    table and the Polars thread pool, which the operating system reclaims anyway
    when the process ends (about 0.1 s on 1M customers). So the streams are
    flushed and the process exits without the interpreter's teardown.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)

