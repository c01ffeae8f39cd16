"""Fetching the official checkpoints from a Zenodo record: a local HTTP server on 127.0.0.1 mimics the
record API (JSON + files with Range support), serving official-format files from ../shared/reference."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from realtime import official

HRNET, MESH = "CVQMAE/mega_hrnet", "MESH_VQVAE/mesh_vqvae_54"


class FakeZenodo:
    """A record API at http://127.0.0.1:PORT/api and its files at /files/<key>.

    `files`: key -> bytes; `record_extra` / `file_extra`: fields a real record carries that we ignore;
    `drop_once`: key -> byte count after which the first transfer of that file is cut off;
    `md5_override`: key -> the checksum the record claims."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.drop_once: dict[str, int] = {}
        self.md5_override: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path == f"/api/records/{official.RECORD_ID}":
                    body = json.dumps(server.record()).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                key = self.path.removeprefix("/files/").removesuffix("/content")
                if key not in server.files:
                    self.send_error(404)
                    return
                data = server.files[key]
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server.drop_once.pop(key, None)
                if cut is not None:
                    self.wfile.write(data[start:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api = f"http://127.0.0.1:{self.httpd.server_address[1]}/api"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def record(self) -> dict:
        base = self.api.removesuffix("/api")
        entries = []
        for key, data in self.files.items():
            md5 = self.md5_override.get(key, hashlib.md5(data).hexdigest())
            entries.append({
                "id": f"id-{key}", "key": key, "size": len(data), "checksum": f"md5:{md5}",
                "links": {"self": f"{base}/files/{key}/content"}, "mimetype": "application/octet-stream",
                "metadata": {"unknown": {"nested": [1, 2]}},
            })  # fmt: skip
        return {"id": int(official.RECORD_ID), "doi": "10.5281/zenodo.14974141", "files": entries,
                "metadata": {"title": "MEGA checkpoints", "license": {"id": "cc-by-4.0"}}, "stats": {"downloads": 1}}  # fmt: skip

    def file_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if r[0].startswith("/files/")]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def fixture_files(reference_dir: Path, names=(HRNET, MESH)) -> dict[str, bytes]:
    """Record files named as the record's plain files are (the official layout's last part)."""
    ckpt = reference_dir / "fixtures" / "checkpoint"
    return {Path(n).name: (ckpt / n).read_bytes() for n in names}


@pytest.fixture
def zenodo(reference_dir):
    server = FakeZenodo(fixture_files(reference_dir))
    yield server
    server.close()


def _fetch(server, dest, **kw):
    lines = []
    kw.setdefault("echo", lines.append)
    paths = official.fetch_official(dest=dest, api=server.api, **kw)
    return paths, lines


def test_good_record_installs_verified_files_and_a_lock(zenodo, tmp_path, assets_dir):
    paths, lines = _fetch(zenodo, tmp_path)
    assert sorted(paths) == [HRNET, MESH]
    lock = json.loads((tmp_path / official.LOCK_FILE).read_text())
    for r, p in paths.items():
        assert p.is_file() and not p.with_name(p.name + ".part").exists()
        assert lock["files"][r]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
        assert lock["files"][r]["size"] == p.stat().st_size
    assert any("loaded strictly" in line for line in lines)
    before = len(zenodo.requests)
    _fetch(zenodo, tmp_path)  # everything matches the lock: nothing is asked of the server
    assert len(zenodo.requests) == before


def test_record_with_wrong_checksum_leaves_nothing(zenodo, tmp_path, assets_dir):
    zenodo.md5_override["mesh_vqvae_54"] = "0" * 32
    with pytest.raises(official.OfficialError, match="md5 mismatch"):
        _fetch(zenodo, tmp_path)
    target = tmp_path / MESH
    assert not target.exists() and not target.with_name(target.name + ".part").exists()
    assert MESH not in json.loads((tmp_path / official.LOCK_FILE).read_text())["files"]


def test_interrupted_transfer_resumes_with_a_range_request(zenodo, tmp_path, assets_dir):
    size = len(zenodo.files["mega_hrnet"])
    zenodo.drop_once["mega_hrnet"] = size // 3
    paths, lines = _fetch(zenodo, tmp_path)
    ranges = [rng for path, rng in zenodo.file_requests() if "mega_hrnet" in path]
    assert ranges == [None, f"bytes={size // 3}-"]
    assert paths[HRNET].read_bytes() == zenodo.files["mega_hrnet"]
    assert any("resuming" in line for line in lines)


def test_interrupted_fetch_keeps_the_part_file_for_the_next_one(zenodo, tmp_path, assets_dir):
    size = len(zenodo.files["mega_hrnet"])
    zenodo.drop_once["mega_hrnet"] = size // 2
    with pytest.raises(official.OfficialError):
        _fetch(zenodo, tmp_path, attempts=1)
    target = tmp_path / HRNET
    assert not target.exists()
    assert (tmp_path / "CVQMAE" / "mega_hrnet.part").stat().st_size == size // 2
    _fetch(zenodo, tmp_path)
    assert zenodo.file_requests()[-2][1] == f"bytes={size // 2}-"
    assert target.read_bytes() == zenodo.files["mega_hrnet"]


def test_missing_file_is_named(zenodo, tmp_path, assets_dir):
    del zenodo.files["mesh_vqvae_54"]
    with pytest.raises(official.OfficialError, match="holds no MESH_VQVAE/mesh_vqvae_54.*--from DIR"):
        _fetch(zenodo, tmp_path)


def test_server_down_says_what_to_do(tmp_path):
    with pytest.raises(official.OfficialError, match="cannot reach the record API.*--from DIR"):
        official.fetch_official(dest=tmp_path, api="http://127.0.0.1:9/api", echo=lambda s: None, timeout=2)


def test_file_that_does_not_load_as_named_never_takes_its_name(reference_dir, tmp_path, assets_dir):
    files = fixture_files(reference_dir)
    files["mega_hrnet"] = (reference_dir / "fixtures" / "checkpoint" / "CVQMAE" / "mega_vit").read_bytes()
    server = FakeZenodo(files)
    try:
        with pytest.raises(official.OfficialError, match="vit backbone, not hrnet"):
            _fetch(server, tmp_path)
    finally:
        server.close()
    assert not (tmp_path / HRNET).exists() and not (tmp_path / "CVQMAE" / "mega_hrnet.part").exists()


def _zip_archive(reference_dir) -> bytes:
    ckpt = reference_dir / "fixtures" / "checkpoint"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../escaped", b"outside")
        link = zipfile.ZipInfo("checkpoint/link")
        link.external_attr = (0o120777) << 16  # a symlink member
        zf.writestr(link, "/etc/passwd")
        for r in (HRNET, MESH):
            zf.write(ckpt / r, f"checkpoint/{r}")
    return buf.getvalue()


def _tar_archive(reference_dir) -> bytes:
    ckpt = reference_dir / "fixtures" / "checkpoint"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        evil = tarfile.TarInfo("../../escaped")
        evil.size = 3
        tf.addfile(evil, io.BytesIO(b"bad"))
        link = tarfile.TarInfo("checkpoint/CVQMAE/mega_hrnet")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
        for r in (HRNET, MESH):
            tf.add(ckpt / r, f"checkpoint/{r}")
    return buf.getvalue()


@pytest.mark.parametrize("name,build", [("checkpoint.zip", _zip_archive), ("checkpoint.tar.gz", _tar_archive)])
def test_archive_record_is_unpacked_safely_into_the_layout(reference_dir, tmp_path, assets_dir, name, build):
    server = FakeZenodo({name: build(reference_dir), "README.md": b"checkpoints"})
    dest = tmp_path / "cache" / "weights"
    try:
        paths, _ = _fetch(server, dest)
    finally:
        server.close()
    ckpt = reference_dir / "fixtures" / "checkpoint"
    for r in (HRNET, MESH):
        assert paths[r].read_bytes() == (ckpt / r).read_bytes() and not paths[r].is_symlink()
    assert not list(tmp_path.rglob("escaped")) and not (dest / "checkpoint").exists()
    assert not list((dest / ".downloads").iterdir())  # the archive is removed once unpacked
    assert official.check_installed(dest, HRNET) == "ok"


def test_corrupt_cached_copy_is_set_aside_and_fetched_again(zenodo, tmp_path, assets_dir):
    paths, _ = _fetch(zenodo, tmp_path)
    data = bytearray(paths[HRNET].read_bytes())
    data[-100] ^= 0xFF
    paths[HRNET].write_bytes(bytes(data))
    assert official.check_installed(tmp_path, HRNET) == "sha256 differs from the lock"
    _, lines = _fetch(zenodo, tmp_path)
    assert paths[HRNET].read_bytes() == zenodo.files["mega_hrnet"]
    assert (tmp_path / "CVQMAE" / "mega_hrnet.rejected").is_file()
    assert any("sha256 differs from the lock" in line for line in lines)


def test_install_from_folder_then_a_copied_cache_is_checked_against_its_lock(reference_dir, tmp_path, assets_dir):
    first = tmp_path / "first"
    lines = []
    official.install_from(reference_dir / "fixtures" / "checkpoint", dest=first, echo=lines.append)
    assert official.check_installed(first, HRNET) == "ok" and official.check_installed(first, MESH) == "ok"
    assert any("not in any lock" in line for line in lines)
    # a copy of that cache with one file damaged on the way: refused against the copied lock
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / official.LOCK_FILE).write_bytes((first / official.LOCK_FILE).read_bytes())
    for r in (HRNET, MESH):
        (copy / r).parent.mkdir(parents=True, exist_ok=True)
        (copy / r).write_bytes((first / r).read_bytes())
    data = bytearray((copy / MESH).read_bytes())
    data[-10] ^= 0xFF
    (copy / MESH).write_bytes(bytes(data))
    second = tmp_path / "second"
    with pytest.raises(official.OfficialError, match="sha256 differs from the lock"):
        official.install_from(copy, dest=second, echo=lambda s: None)
    assert not (second / MESH).exists()
    assert (second / HRNET).is_file()  # the intact file went in


def test_install_from_an_archive(reference_dir, tmp_path, assets_dir):
    archive = tmp_path / "checkpoint.zip"
    archive.write_bytes(_zip_archive(reference_dir))
    paths = official.install_from(archive, dest=tmp_path / "w", echo=lambda s: None)
    assert paths[HRNET].is_file() and official.check_installed(tmp_path / "w", MESH) == "ok"


def test_install_from_a_folder_without_the_files_names_them(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(official.OfficialError, match="holds no CVQMAE/mega_hrnet"):
        official.install_from(tmp_path / "empty", dest=tmp_path / "w", echo=lambda s: None)


def test_a_second_fetch_waits_for_the_first(tmp_path):
    held, release, lines = threading.Event(), threading.Event(), []

    def first():
        with official.fetch_lock(tmp_path):
            held.set()
            release.wait(5)

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    entered = []

    def second():
        with official.fetch_lock(tmp_path, lines.append):
            entered.append(time.monotonic())

    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.3)
    assert not entered and any("waiting" in line for line in lines)
    release.set()
    t.join(5)
    t2.join(5)
    assert entered


def test_record_parsing_takes_both_api_shapes():
    entry = {"key": "mega_hrnet", "size": 3, "checksum": "md5:ABC", "links": {"content": "http://x/c"}, "new": 1}
    legacy = official.parse_record({"files": [entry]})
    rdm = official.parse_record({"files": {"enabled": True, "entries": {"mega_hrnet": entry}}})
    assert legacy == rdm == [official.RecordFile("mega_hrnet", 3, ("md5", "abc"), "http://x/c")]
    with pytest.raises(official.OfficialError, match="lacks"):
        official.parse_record({"files": [{"key": "a", "size": 1}]})
