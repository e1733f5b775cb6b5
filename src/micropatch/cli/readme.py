"""`micropatch readme`: regenerate the README's and docs' generated blocks from the committed results."""
from __future__ import annotations

from micropatch.project.readme import REPO, generators, update


def add_parser(sub) -> None:
    parser = sub.add_parser("readme", help="regenerate README.md's results block from metrics/")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Regenerate the README's and docs' generated blocks from the committed results."""
    update(REPO, generators(args.parser))
    return 0
