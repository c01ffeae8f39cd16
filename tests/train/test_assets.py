"""Finding and downloading assets, against a local HTTP server on 127.0.0.1 (never the internet).

The server serves ../shared/assets in place (read-only; nothing is copied into the repository) and
counts the requests it answers, so a test can tell a skipped download from a repeated one.
"""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from realtime.cli import main as cli_main
from train import assets
from train.assets import ASSETS, PRODUCT_ASSETS, AssetError, download, fetch, find_asset, sha256_of

POOL0 = "meshconv/_pool0.npy"


class _Server:
    """A ThreadingHTTPServer on an ephemeral 127.0.0.1 port, serving `root`; stopped by the fixture."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a handler thread forever

            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(server.root), **kwargs)

            def do_GET(self):
                with server._lock:
                    server.requests.append(self.path)
                if self.path.startswith("/interrupted/"):
                    # Promise more bytes than we send, then hang up mid-body.
                    body = (server.root / POOL0).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def server(assets_dir, monkeypatch):
    monkeypatch.delenv("MEGA_RT_OFFLINE", raising=False)  # the suite runs offline; these tests download from 127.0.0.1
    with _Server(assets_dir) as s:
        yield s


def _closed_port() -> int:
    """A 127.0.0.1 port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --- download ------------------------------------------------------------------------------------


def test_download_saves_and_verifies_good_file(server, assets_dir, tmp_path):
    calls = []
    dest = tmp_path / "sub" / "_pool0.npy"
    out = download(f"{server.url}/{POOL0}", dest, ASSETS[POOL0].sha256, progress=lambda d, t: calls.append((d, t)))
    assert out == dest
    assert dest.read_bytes() == (assets_dir / POOL0).read_bytes()
    assert sha256_of(dest) == ASSETS[POOL0].sha256
    assert _leftovers(tmp_path) == [dest]  # no temporary file left beside it
    size = dest.stat().st_size
    assert calls and calls[-1] == (size, size)


def test_download_wrong_sha256_leaves_nothing(server, tmp_path):
    dest = tmp_path / "_pool0.npy"
    with pytest.raises(AssetError, match="sha256 mismatch") as e:
        download(f"{server.url}/{POOL0}", dest, "0" * 64)
    assert "\n" not in str(e.value)
    assert _leftovers(tmp_path) == []  # neither dest nor its temporary file


def test_download_wrong_sha256_keeps_existing_file_untouched(server, tmp_path):
    dest = tmp_path / "_pool0.npy"
    dest.write_bytes(b"previous")
    with pytest.raises(AssetError):
        download(f"{server.url}/{POOL0}", dest, "0" * 64)
    assert dest.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == [dest]


def test_download_interrupted_transfer_leaves_nothing(server, tmp_path):
    dest = tmp_path / "_pool0.npy"
    with pytest.raises(AssetError, match="interrupted|download failed") as e:
        # The right sha256: only the short body can make this fail.
        download(f"{server.url}/interrupted/{POOL0}", dest, ASSETS[POOL0].sha256, timeout=10)
    assert "\n" not in str(e.value)
    assert _leftovers(tmp_path) == []
    assert server.requests == [f"/interrupted/{POOL0}"]


def test_download_http_404_is_asset_error(server, tmp_path):
    with pytest.raises(AssetError, match="download failed") as e:
        download(f"{server.url}/no/such/file.npy", tmp_path / "x.npy", "0" * 64)
    assert "\n" not in str(e.value)
    assert _leftovers(tmp_path) == []


def test_download_server_down_is_one_line_asset_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/{POOL0}"
    with pytest.raises(AssetError) as e:
        download(url, tmp_path / "_pool0.npy", ASSETS[POOL0].sha256, timeout=5)
    msg = str(e.value)
    assert "\n" not in msg
    assert url in msg and "download failed" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained traceback
    assert _leftovers(tmp_path) == []


# --- fetch ---------------------------------------------------------------------------------------


def test_fetch_downloads_every_product_asset_then_skips(server, assets_dir, tmp_path):
    dest_root = tmp_path / "cache"
    paths = fetch(dest_root=dest_root, base_url=server.url + "/")
    assert paths == [dest_root / n for n in PRODUCT_ASSETS]
    for name in PRODUCT_ASSETS:
        assert sha256_of(dest_root / name) == ASSETS[name].sha256
    assert sorted(server.requests) == sorted(f"/{n}" for n in PRODUCT_ASSETS)
    assert not [p for p in dest_root.rglob("*") if "partial" in p.name]

    server.requests.clear()
    again = fetch(dest_root=dest_root, base_url=server.url)
    assert again == paths
    assert server.requests == []  # good copies are not downloaded again


def test_fetch_replaces_a_corrupt_copy(server, tmp_path):
    dest_root = tmp_path / "cache"
    bad = dest_root / POOL0
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"corrupt")
    fetch(names=[POOL0], dest_root=dest_root, base_url=server.url)
    assert sha256_of(bad) == ASSETS[POOL0].sha256
    assert server.requests == [f"/{POOL0}"]


def test_fetch_defaults_to_user_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MEGA_RT_CACHE", str(tmp_path / "usercache"))
    (p,) = fetch(names=[POOL0], base_url=server.url)
    assert p == tmp_path / "usercache" / "assets" / POOL0


# --- find_asset ----------------------------------------------------------------------------------


@pytest.fixture
def three_places(tmp_path, monkeypatch):
    """The same asset name in an explicit folder, $MEGA_RT_ASSETS and the user cache."""
    explicit, env, cache = tmp_path / "explicit", tmp_path / "env", tmp_path / "cache"
    for root in (explicit, env, cache / "assets"):
        (root / "meshconv").mkdir(parents=True)
        (root / POOL0).write_text(root.name)
    monkeypatch.setenv("MEGA_RT_ASSETS", str(env))
    monkeypatch.setenv("MEGA_RT_CACHE", str(cache))
    return explicit, env, cache


def test_find_asset_order_explicit_env_cache(three_places, monkeypatch):
    explicit, env, cache = three_places
    assert find_asset(POOL0, explicit) == explicit / POOL0  # explicit folder
    assert find_asset(POOL0, explicit / POOL0) == explicit / POOL0  # explicit file
    assert find_asset(POOL0) == env / POOL0
    (env / POOL0).unlink()
    assert find_asset(POOL0) == cache / "assets" / POOL0
    monkeypatch.delenv("MEGA_RT_ASSETS")
    assert find_asset(POOL0) == cache / "assets" / POOL0


def test_find_asset_explicit_missing_does_not_fall_back(three_places, tmp_path):
    with pytest.raises(AssetError, match="not found"):
        find_asset(POOL0, tmp_path / "nowhere")


def test_find_asset_missing_says_run_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("MEGA_RT_ASSETS", str(tmp_path / "env"))
    monkeypatch.setenv("MEGA_RT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(AssetError) as e:
        find_asset(POOL0)
    msg = str(e.value)
    assert "\n" not in msg
    assert "mega-rt fetch" in msg and "MEGA_RT_ASSETS" in msg
    assert str(tmp_path / "env") in msg and str(tmp_path / "cache" / "assets") in msg


def test_asset_status_reports_ok_missing_and_bad(tmp_path, monkeypatch, assets_dir):
    monkeypatch.setenv("MEGA_RT_ASSETS", str(assets_dir))
    monkeypatch.setenv("MEGA_RT_CACHE", str(tmp_path / "cache"))
    status = assets.asset_status()
    assert set(status) == set(PRODUCT_ASSETS)
    assert all(v.startswith("ok ") for v in status.values()), status

    env = tmp_path / "env"
    (env / "meshconv").mkdir(parents=True)
    (env / POOL0).write_bytes(b"corrupt")
    monkeypatch.setenv("MEGA_RT_ASSETS", str(env))
    status = assets.asset_status()
    assert status[POOL0] == f"bad sha256 {env / POOL0}"
    assert status["meshconv/_pool1.npy"] == "missing"


# --- CLI -----------------------------------------------------------------------------------------


def _run_cli(args):
    result = CliRunner().invoke(cli_main, args, catch_exceptions=True)
    return result, result.output  # stdout and stderr, as the user would see them


def test_cli_fetch_from_mirror_exits_0(server, tmp_path):
    dest = tmp_path / "dest"
    result, output = _run_cli(["fetch", "--base-url", server.url, "--dest", str(dest)])
    assert result.exit_code == 0, output
    assert f"{len(PRODUCT_ASSETS)} assets verified" in output
    for name in PRODUCT_ASSETS:
        assert sha256_of(dest / name) == ASSETS[name].sha256


@pytest.mark.parametrize("where", ["server down", "404"])
def test_cli_fetch_bad_base_url_is_one_line_error(where, server, tmp_path):
    base = f"http://127.0.0.1:{_closed_port()}" if where == "server down" else f"{server.url}/not-a-mirror"
    result, output = _run_cli(["fetch", "--base-url", base, "--dest", str(tmp_path / "dest")])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    errors = [line for line in output.replace("\r", "\n").splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert base in errors[0] and "download failed" in errors[0]
    assert _leftovers(tmp_path / "dest") == []
