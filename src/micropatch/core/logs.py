"""Logging set-up shared by the stages and the CLI."""
import logging
import os

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def setup(level: int = logging.INFO) -> None:
    """One-line log records on stderr: time, logger, message."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
