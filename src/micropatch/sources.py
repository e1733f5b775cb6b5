"""Dataset sources: materialise a dataset's raw files from a local folder (archives and URLs: see fetch)."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .io import InputError

log = logging.getLogger(__name__)


def resolve(source: str) -> Path:
    """A source string with ~ and $VARS expanded, as a Path; raises InputError naming an unset variable."""
    expanded = os.path.expanduser(os.path.expandvars(source))
    if "$" in expanded:
        raise InputError(f"source '{source}': environment variable not set ({expanded}); export it first")
    return Path(expanded)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link when on one filesystem (instant, no extra space), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def materialise(source: str, dest: Path) -> Path:
    """Put the dataset named by source at dest (replaced atomically: a temp folder renamed into place)."""
    path = resolve(source)
    if not path.exists():
        raise InputError(f"source '{source}' ({path}) does not exist; download the dataset there (README) "
                         "or fix the source in params.yaml")
    if not path.is_dir():
        raise InputError(f"source '{source}' is a file; give a dataset folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copytree(path, tmp / "root", copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns("Thumbs.db", ".DS_Store"))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp / "root", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("materialised %s -> %s", path, dest)
    return dest
