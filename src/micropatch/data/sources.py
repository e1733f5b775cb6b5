"""Dataset sources: a local folder, a local archive (zip, multi-part zip, tar), an https URL, or `synthetic`.

Archives are extracted safely (no absolute paths, no `..`, no links leaving the archive, size and file-count
limits) into a temporary folder that is renamed into place, so a rejected archive leaves nothing behind.
"""
from __future__ import annotations

import io
import logging
import os
import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm import tqdm

from micropatch.core.fileio import InputError, sha256_file, staged_folder

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MULTIPART = re.compile(r"^(.*\.zip)\.(\d{3})$")  # DDR-dataset.zip.001, .002, ... (joined by `cat` upstream)


@dataclass(frozen=True)
class Limits:
    """What an archive may expand to: total bytes and number of members."""

    max_bytes: int = 64 << 30
    max_files: int = 200_000


def resolve(source: str) -> Path:
    """A source string with ~ and $VARS expanded, as a Path; raises InputError naming an unset variable."""
    expanded = os.path.expanduser(os.path.expandvars(source))
    if "$" in expanded:
        raise InputError(f"source '{source}': environment variable not set ({expanded}); export it first")
    return Path(expanded)


def is_url(source: str) -> bool:
    """True for http(s) URLs."""
    return urlparse(source).scheme in ("http", "https")


def is_archive(path: Path) -> bool:
    """True for .zip, .zip.001 (first of a multi-part zip), .tar, .tar.gz and .tgz files."""
    name = path.name.lower()
    return name.endswith((".zip", ".tar", ".tar.gz", ".tgz")) or bool(MULTIPART.match(name))


def multipart_parts(first: Path) -> list[Path]:
    """name.zip.001 and the consecutive parts beside it (.002, .003, ...) that exist."""
    stem = MULTIPART.match(first.name).group(1)
    parts = []
    for number in range(1, 1000):
        part = first.with_name(f"{stem}.{number:03d}")
        if not part.is_file():
            break
        parts.append(part)
    return parts


class MultiPartFile(io.RawIOBase):
    """The parts of a split zip (name.zip.001, .002, ...) read as one seekable file, without joining them on disk."""

    def __init__(self, first: Path):
        self.parts = multipart_parts(first)
        self.sizes = [p.stat().st_size for p in self.parts]
        self.size, self.position, self.handle, self.handle_index = sum(self.sizes), 0, None, -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        start = 0
        for index, size in enumerate(self.sizes):
            if self.position < start + size:
                if index != self.handle_index:
                    if self.handle:
                        self.handle.close()
                    self.handle, self.handle_index = open(self.parts[index], "rb"), index
                self.handle.seek(self.position - start)
                count = self.handle.readinto(memoryview(buffer)[:min(len(buffer), start + size - self.position)])
                self.position += count
                return count
            start += size
        return 0

    def close(self) -> None:
        if self.handle:
            self.handle.close()
        super().close()


def safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """The member's relative path; raises InputError for absolute paths and '..' components."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise InputError(f"{archive}: member '{name}' has an absolute path; refused to extract this archive "
                         "(it would write outside its folder): get a clean copy of the dataset")
    if ".." in path.parts:
        raise InputError(f"{archive}: member '{name}' has a '..' component; refused to extract this archive "
                         "(zip-slip: it would write outside its folder): get a clean copy of the dataset")
    return path


def link_stays_inside(member: PurePosixPath, target: str, relative_to_member: bool) -> bool:
    """True when a link at member pointing to target resolves inside the archive root."""
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        return False
    base = member.parent.parts if relative_to_member else ()
    depth = len(base)
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def check_totals(archive: Path, files: int, total_bytes: int, limits: Limits) -> None:
    """Raise InputError when an archive declares more members or bytes than the limits allow."""
    if files > limits.max_files:
        raise InputError(f"{archive}: {files} members exceed the limit of {limits.max_files}; refused to extract "
                         "(raise download.max_extracted_files if this archive is genuine)")
    if total_bytes > limits.max_bytes:
        raise InputError(f"{archive}: expands to {total_bytes / 2**30:.2f} GiB, over the limit of "
                         f"{limits.max_bytes / 2**30:.2f} GiB; refused to extract (a decompression bomb, or raise "
                         "download.max_extracted_gib if this archive is genuine)")


def extract_zip(archive: Path, out: Path, limits: Limits) -> None:
    """Extract a zip (or the first part of a multi-part zip) into out, after checking every member."""
    raw = MultiPartFile(archive) if MULTIPART.match(archive.name.lower()) else open(archive, "rb")
    try:
        with zipfile.ZipFile(raw) as zf:
            members = zf.infolist()
            check_totals(archive, len(members), sum(m.file_size for m in members), limits)
            written = 0
            for member in tqdm(members, desc=f"extract {archive.name}", unit="file", leave=False):
                path = safe_member_path(member.filename, archive)
                if stat.S_ISLNK(member.external_attr >> 16):
                    target = zf.read(member).decode("utf-8", "replace")
                    if not link_stays_inside(path, target, relative_to_member=True):
                        raise InputError(f"{archive}: member '{member.filename}' is a symlink to '{target}', outside "
                                         "the archive; refused to extract: get a clean copy of the dataset")
                    log.warning("%s: skipped symlink %s -> %s (datasets hold none)", archive, path, target)
                    continue
                destination = out.joinpath(*path.parts)
                if member.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(destination, "wb") as dst:
                    while chunk := src.read(CHUNK):
                        written += len(chunk)  # headers can lie about sizes: count what really comes out
                        if written > limits.max_bytes:
                            check_totals(archive, 0, written, limits)
                        dst.write(chunk)
    except zipfile.BadZipFile as err:
        raise InputError(f"{archive}: not a readable zip ({err}); for DDR, give the first part "
                         "(DDR-dataset.zip.001) with all parts beside it, or re-download") from err
    finally:
        raw.close()


def extract_tar(archive: Path, out: Path, limits: Limits) -> None:
    """Extract a tar / tar.gz into out, after checking every member (links must stay inside, no devices)."""
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            check_totals(archive, len(members), sum(m.size for m in members), limits)
            for member in members:
                path = safe_member_path(member.name, archive)
                if member.issym() or member.islnk():
                    # tar hard links name a member path from the archive root; symlinks are relative to their folder
                    if not link_stays_inside(path, member.linkname, relative_to_member=member.issym()):
                        kind = "symlink" if member.issym() else "hard link"
                        raise InputError(f"{archive}: member '{member.name}' is a {kind} to '{member.linkname}', "
                                         "outside the archive; refused to extract: get a clean copy of the dataset")
                elif not (member.isfile() or member.isdir()):
                    raise InputError(f"{archive}: member '{member.name}' is a device or fifo; refused to extract")
            tf.extractall(out, members=tqdm(members, desc=f"extract {archive.name}", unit="file", leave=False),
                          filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise InputError(f"{archive}: unreadable or truncated tar archive ({err}); re-download it") from err


def extract(archive: Path, dest: Path, limits: Limits) -> Path:
    """Extract archive to dest atomically (temp folder, then rename); dest is replaced only on success."""
    with staged_folder(dest) as staging:
        if archive.name.lower().endswith(".zip") or MULTIPART.match(archive.name.lower()):
            extract_zip(archive, staging, limits)
        else:
            extract_tar(archive, staging, limits)
    log.info("extracted %s -> %s", archive, dest)
    return dest


def download(url: str, sha256: str, folder: Path, timeout_s: float = 60,
             again: str = "run the download stage again", pinned_in: str = "params.yaml") -> Path:
    """Fetch url into folder (resuming a partial .part file with an HTTP Range request); verify sha256 before use.

    again, pinned_in: how the error messages tell the user to retry, and where the URL and sha256 are written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / (Path(urlparse(url).path).name or "download")
    if final.is_file() and sha256_file(final) == sha256:
        log.info("%s: already downloaded and verified", final)
        return final
    part = final.with_name(final.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    try:
        request = Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        with urlopen(request, timeout=timeout_s) as response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the Range request: start again
            length = int(response.headers.get("Content-Length", -1))
            with open(part, "ab" if offset else "wb") as f, tqdm(total=offset + length if length >= 0 else None,
                                                                  initial=offset, desc=final.name, unit="B",
                                                                  unit_scale=True) as bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            if length >= 0 and bar.n < offset + length:  # http.client returns short reads silently
                raise OSError(f"connection closed {offset + length - bar.n} bytes early")
    except HTTPError as err:
        if err.code != 416:  # 416: the .part already holds every byte; verify it below
            raise InputError(f"{url}: HTTP {err.code} {err.reason}; check the URL") from err
    except (URLError, OSError, ValueError) as err:
        got = part.stat().st_size if part.is_file() else 0
        raise InputError(f"{url}: download interrupted after {got} bytes ({err}); {again} to resume from "
                         f"{part}") from err
    actual = sha256_file(part)
    if actual != sha256:
        part.unlink()
        raise InputError(f"{url}: sha256 {actual} is not the expected {sha256}: the file is truncated or not the "
                         f"published one; deleted it, nothing was extracted or loaded. Check the URL and sha256 in "
                         f"{pinned_in} and {again}")
    os.replace(part, final)
    return final


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link when on one filesystem (instant, no extra space), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_folder(path: Path, dest: Path) -> Path:
    """Put a copy (hard links where possible) of folder path at dest, replaced atomically."""
    with staged_folder(dest) as staging:
        shutil.copytree(path, staging, copy_function=_link_or_copy, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("Thumbs.db", ".DS_Store"))
    log.info("materialised %s -> %s", path, dest)
    return dest


def materialise(entry: dict, dest: Path, downloads: Path, limits: Limits = Limits()) -> Path:
    """Put the dataset of a params `download.datasets` entry at dest.

    entry: {name, adapter, source[, sha256][, synthetic: {n_images, seed, width, height, ...}]}.
    """
    source = str(entry["source"])
    expected = entry.get("sha256")
    if source == "synthetic":
        from micropatch.data.synthetic import LAYOUT_WRITERS, SyntheticSpec

        settings = dict(entry.get("synthetic", {}))
        n_images, seed = settings.pop("n_images", 8), settings.pop("seed", 0)
        with staged_folder(dest) as staging:
            LAYOUT_WRITERS[entry["adapter"]](staging, n_images, seed, SyntheticSpec(**settings))
        return dest
    if is_url(source):
        if not expected:
            raise InputError(f"source '{source}': a URL source needs its sha256 in params (download.datasets: "
                             "sha256: ...), so a truncated or altered download is never used")
        return extract(download(source, expected, downloads), dest, limits)
    path = resolve(source)
    if not path.exists():
        raise InputError(f"source '{source}' ({path}) does not exist; download the dataset there "
                         "(docs/how-to/real-datasets.md) "
                         "or fix the source in params.yaml")
    if path.is_dir():
        return copy_folder(path, dest)
    if not is_archive(path):
        raise InputError(f"source '{source}' is a file but not a .zip, .zip.001, .tar, .tar.gz or .tgz archive")
    if expected and sha256_file(path) != expected:
        raise InputError(f"{path}: sha256 does not match download.datasets sha256 ({expected}); re-download it")
    return extract(path, dest, limits)


def local_sources(params: dict, project: Path) -> list[str]:
    """The download sources that are files or folders (not URLs, not `synthetic`), and the folders adapters read in
    place (maples_dr's `images` option), as paths relative to the project folder (absolute when given so): the
    download stage's data dependencies in dvc.yaml. Every part of a multi-part zip is one."""
    paths = []
    for entry in params["download"]["datasets"]:
        images = entry.get("options", {}).get("images")  # maples_dr: the MESSIDOR photographs, read in place
        if images:
            path = resolve(str(images))
            paths.append(str(path) if path.is_absolute() else os.path.relpath(project / path, project))
        source = str(entry["source"])
        if source == "synthetic" or is_url(source):
            continue
        path = resolve(source)
        parts = multipart_parts(path) if MULTIPART.match(path.name) and path.is_file() else [path]
        paths += [str(p) if p.is_absolute() else os.path.relpath(project / p, project) for p in parts]
    return sorted(set(paths))
