"""Dataset sources: archives extracted safely and atomically, URLs verified by sha256 and resumed."""
import hashlib
import http.server
import io
import os
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from micropatch.core.fileio import InputError
from micropatch.data.datasets import load_records
from micropatch.data.sources import Limits, materialise


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix())
    return archive


def split_file(path: Path, parts: int) -> Path:
    """Cut a file into name.001 ... name.00N as DDR ships its zip; return the first part."""
    data = path.read_bytes()
    step = len(data) // parts + 1
    for i in range(parts):
        path.with_name(f"{path.name}.{i + 1:03d}").write_bytes(data[i * step:(i + 1) * step])
    path.unlink()
    return path.with_name(f"{path.name}.001")


def assert_nothing_left(parent: Path, dest: Path, outside: Path) -> None:
    assert not dest.exists()
    assert [p.name for p in parent.iterdir() if p.name.startswith(".")] == []  # no temp folder left
    assert not outside.exists()


def test_zip_tar_and_multipart_zip_give_the_same_records(synthetic_idrid, tmp_path):
    archives = {"zip": zip_folder(synthetic_idrid, tmp_path / "idrid.zip")}
    with tarfile.open(tmp_path / "idrid.tar.gz", "w:gz") as tf:
        tf.add(synthetic_idrid, arcname=".")
    archives["tar.gz"] = tmp_path / "idrid.tar.gz"
    archives["multi-part zip"] = split_file(zip_folder(synthetic_idrid, tmp_path / "DDR-like.zip"), 3)
    expected = [(r.image_id, r.image_path.relative_to(synthetic_idrid))
                for r in load_records("idrid", synthetic_idrid, "x")]
    for kind, archive in archives.items():
        dest = tmp_path / "raw" / kind
        root = materialise({"name": kind, "adapter": "idrid", "source": str(archive)}, dest, tmp_path / "dl")
        got = [(r.image_id, r.image_path.relative_to(root)) for r in load_records("idrid", root, "x")]
        assert got == expected, kind


def malicious_archives(tmp_path: Path) -> dict[str, Path]:
    """The corpus: zip-slip, absolute path, symlink and hard-link escapes, a decompression bomb."""
    corpus = {}
    with zipfile.ZipFile(path := tmp_path / "slip.zip", "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../../escaped.txt", "owned")
    corpus["zip-slip ../"] = path
    with zipfile.ZipFile(path := tmp_path / "absolute.zip", "w") as zf:
        zf.writestr(str(tmp_path / "escaped.txt"), "owned")
    corpus["absolute path"] = path
    with zipfile.ZipFile(path := tmp_path / "symlink.zip", "w") as zf:
        link = zipfile.ZipInfo("data/link")
        link.external_attr = (0o120777 << 16)  # S_IFLNK
        zf.writestr(link, "../../../escaped.txt")
    corpus["zip symlink escape"] = path
    for kind, linkname in (("tar symlink escape", "../../escaped.txt"), ("tar hard link escape", "../escaped.txt")):
        with tarfile.open(path := tmp_path / f"{kind.replace(' ', '_')}.tar.gz", "w:gz") as tf:
            info = tarfile.TarInfo("data/link")
            info.type = tarfile.SYMTYPE if "symlink" in kind else tarfile.LNKTYPE
            info.linkname = linkname
            tf.addfile(info)
        corpus[kind] = path
    with zipfile.ZipFile(path := tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * (64 << 20))  # 64 MiB of zeros compress to ~64 KiB
    corpus["bomb"] = path
    with tarfile.open(path := tmp_path / "tar_bomb.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 64 << 20
        tf.addfile(info, io.BytesIO(b"\0" * info.size))
    corpus["tar bomb"] = path
    return corpus


@pytest.mark.parametrize("kind", ["zip-slip ../", "absolute path", "zip symlink escape", "tar symlink escape",
                                  "tar hard link escape", "bomb", "tar bomb"])
def test_malicious_archive_is_refused_and_leaves_nothing(tmp_path, kind):
    (corpus := tmp_path / "corpus").mkdir()
    archive = malicious_archives(corpus)[kind]
    raw = tmp_path / "work" / "data" / "raw"
    raw.mkdir(parents=True)
    with pytest.raises(InputError) as err:
        materialise({"name": "evil", "adapter": "idrid", "source": str(archive)}, raw / "evil", tmp_path / "dl",
                    Limits(max_bytes=16 << 20, max_files=100))
    message = str(err.value)
    assert str(archive) in message and "refused" in message
    expected = {"zip-slip ../": "'..'", "absolute path": "absolute", "bomb": "GiB", "tar bomb": "GiB"}
    assert expected.get(kind, "outside the archive") in message
    assert_nothing_left(raw, raw / "evil", tmp_path / "work" / "escaped.txt")
    assert not (tmp_path / "escaped.txt").exists() and not (corpus / "escaped.txt").exists()


def test_too_many_files_is_refused(tmp_path):
    with zipfile.ZipFile(archive := tmp_path / "many.zip", "w") as zf:
        for i in range(20):
            zf.writestr(f"f{i}.txt", "x")
    with pytest.raises(InputError, match="20 members exceed the limit of 10"):
        materialise({"name": "m", "adapter": "idrid", "source": str(archive)}, tmp_path / "raw" / "m",
                    tmp_path / "dl", Limits(max_files=10))
    assert not (tmp_path / "raw" / "m").exists()


class ArchiveServer(http.server.BaseHTTPRequestHandler):
    """Serves one payload with Range support; `cut_first` closes the first response half-way, like a dropped link."""

    payload, cut_first, requests = b"", False, []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        type(self).requests.append(self.headers.get("Range"))
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_first:
            type(self).cut_first = False
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the rest never arrives
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    ArchiveServer.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ArchiveServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield ArchiveServer, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_url_download_is_resumed_after_a_dropped_connection_and_verified(synthetic_idrid, tmp_path, server):
    handler, base = server
    handler.payload = zip_folder(synthetic_idrid, tmp_path / "idrid.zip").read_bytes()
    handler.cut_first = True
    entry = {"name": "idrid", "adapter": "idrid", "source": f"{base}/idrid.zip",
             "sha256": hashlib.sha256(handler.payload).hexdigest()}
    dest, downloads = tmp_path / "raw" / "idrid", tmp_path / "downloads"
    with pytest.raises(InputError, match="interrupted after .* run the download stage again to resume"):
        materialise(entry, dest, downloads)
    assert not dest.exists() and (downloads / "idrid.zip.part").stat().st_size < len(handler.payload)
    root = materialise(entry, dest, downloads)  # the second run asks only for the missing bytes
    assert handler.requests[-1] == f"bytes={len(handler.payload) // 2}-"
    assert len(load_records("idrid", root, "idrid")) == 4
    assert (downloads / "idrid.zip").read_bytes() == handler.payload


def test_truncated_or_altered_download_is_detected_and_not_used(synthetic_idrid, tmp_path, server):
    handler, base = server
    good = zip_folder(synthetic_idrid, tmp_path / "idrid.zip").read_bytes()
    handler.payload = good[: len(good) - 1000]  # the server itself holds a truncated file
    entry = {"name": "idrid", "adapter": "idrid", "source": f"{base}/idrid.zip",
             "sha256": hashlib.sha256(good).hexdigest()}
    dest, downloads = tmp_path / "raw" / "idrid", tmp_path / "downloads"
    with pytest.raises(InputError, match="sha256 .* is not the expected .* nothing was extracted"):
        materialise(entry, dest, downloads)
    assert not dest.exists() and list(downloads.iterdir()) == []


def test_url_source_without_sha256_is_refused(tmp_path):
    with pytest.raises(InputError, match="needs its sha256"):
        materialise({"name": "d", "adapter": "ddr", "source": "https://127.0.0.1:9/ddr.zip"}, tmp_path / "d",
                    tmp_path / "dl")


@pytest.mark.parametrize("layout", ["idrid", "ddr", "eophtha"])
def test_synthetic_source_writes_each_layout_for_its_adapter(tmp_path, layout):
    entry = {"name": layout, "adapter": layout, "source": "synthetic",
             "synthetic": {"n_images": 6, "seed": 5, "width": 256, "height": 180}}
    root = materialise(entry, tmp_path / "raw" / layout, tmp_path / "dl")
    assert len(load_records(layout, root, layout)) == 6
    assert [p.name for p in (tmp_path / "raw").iterdir()] == [layout]  # no temp folder left beside it
    shutil.rmtree(root)
    assert not os.listdir(tmp_path / "raw")
