"""The `micropatch` command: what a user runs by hand, beside the DVC stages. One module per command, each with
`add_parser` (its arguments) and `run` (its body). A command that trains or predicts pins the compute mode before
torch is imported, so those modules import torch-land code inside `run`."""
from __future__ import annotations

import argparse
import sys

from micropatch.cli import (
    ablate,
    audit,
    datasets,
    evaluate,
    export,
    pipeline,
    predict,
    readme,
    rescore,
    ship,
    study,
    synth,
    tune,
)
from micropatch.core import logs
from micropatch.core.fileio import InputError

COMMANDS = (synth, audit, evaluate, datasets, predict, export, tune, ablate, pipeline, ship, study, readme, rescore)


class OneLineParser(argparse.ArgumentParser):
    """An argument error is one line on stderr (exit 2), not the usage block above it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    """The whole command line: every command's subparser."""
    top = OneLineParser(prog="micropatch", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error is one line on stderr and exit 2, Ctrl-C one line and exit 130."""
    logs.setup()
    top = parser()
    args = top.parse_args(argv)
    args.parser = top  # the command line itself: `micropatch readme` writes its reference page from it
    try:
        return args.func(args) or 0
    except InputError as err:
        print(f"micropatch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"\nmicropatch {args.command}: interrupted{f': {err}' if str(err) else ''}", file=sys.stderr)
        return 130
