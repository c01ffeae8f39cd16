"""Find and fetch the public data files mega-rt needs (never committed to the repository).

Lookup order for an asset: an explicit path -> `$MEGA_RT_ASSETS/<relpath>` -> the user cache
(`$MEGA_RT_CACHE/assets/<relpath>`, default `~/.cache/mega-rt/assets`). `fetch()` downloads from the
upstream URL into the cache, through a temporary file, and keeps it only if its sha256 matches.

This module lives in `train/` (not `realtime/`) because the tokenizer and the synthetic body need the
assets too, and imports only point down: realtime -> engines -> train.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from train.io import fsync_path, temp_path

_MESHCONV_BASE = (
    "https://raw.githubusercontent.com/papagina/MeshConvolution/master/"
    "train/0223_GraphAE27_compare/connections/dfaust2/"
)


@dataclass(frozen=True)
class Asset:
    name: str  # relative path inside an assets folder, e.g. "meshconv/_pool0.npy"
    url: str
    sha256: str


_SHA = {
    "meshconv/LICENSE.md": "770ea3d455cbc6525f8c0e23c14fbb3e46c0af928467e97e6922192cd6f39a8c",
    "meshconv/_pool0.npy": "bb8f3661708e461c69839d114f52e02f05afa750416d553f632ea642b3f97c96",
    "meshconv/_pool1.npy": "7ec0773329c36cf44a02765ee89e2eb110240ab03ce91cdabc84299dacb16631",
    "meshconv/_pool2.npy": "cc5acd27734625b55d08336fbbdff9411e42ea5e5072c9ced0435953e2f9ee61",
    "meshconv/_pool3.npy": "09902bd044f0280b1e59571ecde335805a92ba3b248059fdc4d0349159d7b199",
    "meshconv/_pool4.npy": "f49d4b4d210fd40fc9f9785e4ce10337551dc3f558974df31a89451ddd2e4941",
    "meshconv/_pool5.npy": "9808015822a2cc2a3f305337d52cbb47604bcdf583f3c844fcf67ba3217d5a52",
    "meshconv/_pool6.npy": "ea760d5e69979a75f970d58c802b7bf419258cb8c0217b2441b08873b99d66a2",
    "meshconv/_unpool0.npy": "6776613d4c7b15b7cd42004a833c6d40db8f4f1ef6a0f2e6f3c3424fdf62c7cb",
    "meshconv/_unpool1.npy": "7ec71372ac0b50de52ac453b1d28705b1f021331c311e7210e5da4070e0228df",
    "meshconv/_unpool2.npy": "4512312bb7fbffa59c564eaf48514add38ba190b3fddb8877d6019fb849da034",
    "meshconv/_unpool3.npy": "0f6d9b6f4e4f69512388277ca7ccdbe9f8560751e82ddb33485a22047e7d0a73",
    "meshconv/_unpool4.npy": "a9917981ccef0f4e39b596162258f7af420dde062b84790550b750452a5a6f7c",
    "meshconv/_unpool5.npy": "eac67842f2b6d412936c9542720c740f21eee76f976eeeb44cfa25c83f9ad09b",
    "meshconv/_unpool6.npy": "c258fb901f811f9991517ee8e37c05257eb117292f300a32185a57b30d8cbb8c",
    "meshconv/template.ply": "228bccc617920659b95b7e07eee9ee0512f5f9a29943166be6625027dde7cc5d",
    "segmentation/smpl_vert_segmentation.json": "0af78b5c581a225998b4804b4c9dd8351e155b34253947eb2541160852105ab8",
}


def _url(name: str) -> str:
    if name == "meshconv/template.ply":
        return "https://raw.githubusercontent.com/papagina/MeshConvolution/master/data/DFAUST/template.ply"
    if name == "meshconv/LICENSE.md":
        return "https://raw.githubusercontent.com/papagina/MeshConvolution/master/LICENSE.md"
    if name.startswith("meshconv/"):
        return _MESHCONV_BASE + name.split("/", 1)[1]
    if name == "segmentation/smpl_vert_segmentation.json":
        return (
            "https://raw.githubusercontent.com/Meshcapade/wiki/main/assets/"
            "SMPL_body_segmentation/smpl/smpl_vert_segmentation.json"
        )
    raise KeyError(name)


ASSETS: dict[str, Asset] = {n: Asset(n, _url(n), s) for n, s in _SHA.items()}

# The Mesh-VQ-VAE uses pool0..pool6 and unpool6..unpool0 (pool7/unpool7 exist upstream, unused).
MESHCONV_LAYERS = tuple(f"pool{i}" for i in range(7)) + tuple(f"unpool{i}" for i in range(6, -1, -1))
PRODUCT_ASSETS = tuple(ASSETS)


class AssetError(RuntimeError):
    """A missing, corrupt or unfetchable asset; the message says what to do."""


def cache_dir() -> Path:
    """$MEGA_RT_CACHE, else $XDG_CACHE_HOME/mega-rt, else ~/.cache/mega-rt."""
    if os.environ.get("MEGA_RT_CACHE"):
        return Path(os.environ["MEGA_RT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mega-rt"


def search_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("MEGA_RT_ASSETS")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(cache_dir() / "assets")
    return dirs


def find_asset(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """Path of asset `name` (e.g. 'meshconv/_pool0.npy'); a one-line AssetError if absent."""
    if explicit is not None:
        p = Path(explicit).expanduser()
        if p.is_dir():
            p = p / name
        if not p.is_file():
            raise AssetError(f"{p}: file not found (asset {name})")
        return p
    for d in search_dirs():
        p = d / name
        if p.is_file():
            return p
    where = " or ".join(str(d) for d in search_dirs())
    raise AssetError(
        f"asset {name} not found in {where}: run `mega-rt fetch` (needs internet) "
        f"or point MEGA_RT_ASSETS at a folder that holds it"
    )


def assets_root(name: str = "meshconv/_pool0.npy", explicit=None) -> Path:
    """The folder that holds `name` (so sibling assets are read from the same place)."""
    p = find_asset(name, explicit)
    return p.parents[len(Path(name).parts) - 1]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def asset_status() -> dict[str, str]:
    """name -> 'ok <path>' | 'missing' | 'bad sha256 <path>' for every product asset."""
    out = {}
    for name, asset in ASSETS.items():
        try:
            p = find_asset(name)
        except AssetError:
            out[name] = "missing"
            continue
        out[name] = f"ok {p}" if sha256_of(p) == asset.sha256 else f"bad sha256 {p}"
    return out


def download(
    url: str,
    dest: Path,
    sha256: str,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download `url` to `dest` through a temp file; keep it only if its sha256 matches.

    An interrupted or wrong download never leaves a file at `dest`.
    """
    return download_checked(url, dest, ("sha256", sha256), progress=progress, timeout=timeout)


def url_of(location: str) -> str:
    """A URL for `location`: http(s):// and file:// as given, a plain path as a file:// URL."""
    if "://" in location:
        return location
    return Path(location).expanduser().resolve().as_uri()


def download_checked(
    url: str,
    dest: Path,
    checksum: tuple[str, str],
    size: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
    resume: bool = False,
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Download `url` to `dest`, keeping it only if its `checksum` (("sha256" | "md5", hex)) and `size`
    match and `verify(path)` accepts it; nothing is ever left at `dest` otherwise.

    With `resume`, the bytes go to `<dest>.part`, which survives an interrupted transfer; the next call
    asks the server for the rest (HTTP Range) and starts over when the server sends the whole file.
    Without it, the transfer goes to a temporary name that is removed on any failure."""
    import urllib.error
    import urllib.request

    algo, expected = checksum
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = url_of(url)
    part = dest.with_name(dest.name + ".part") if resume else temp_path(dest)
    done = part.stat().st_size if resume and part.is_file() else 0
    if size is not None and done > size:
        part.unlink()
        done = 0
    h = hashlib.new(algo)
    try:
        headers = {"Range": f"bytes={done}-"} if done and url.startswith("http") else {}
        if done and not headers:
            done = 0  # no ranges on file:// URLs: read it again
        if done < (size if size is not None else done + 1):
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                if done and getattr(resp, "status", 200) != 206:
                    done = 0  # the server ignored the range: the whole file follows
                total = resp.headers.get("Content-Length")
                total = int(total) + done if total is not None else size
                if done:
                    with open(part, "rb") as f:  # the hash covers the bytes already there
                        while block := f.read(1 << 20):
                            h.update(block)
                with open(part, "ab" if done else "wb") as out:
                    while block := resp.read(1 << 16):
                        out.write(block)
                        h.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
        else:
            with open(part, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        got = part.stat().st_size
        expected_size = size if size is not None else got
        if got != expected_size:
            raise AssetError(f"{url}: transfer interrupted ({got} of {expected_size} bytes); run the fetch again")
        if h.hexdigest() != expected:
            part.unlink(missing_ok=True)
            raise AssetError(
                f"{url}: {algo} mismatch (got {h.hexdigest()[:12]}…, expected {expected[:12]}…); "
                f"the upstream file changed or the download is corrupt — nothing was saved"
            )
        fsync_path(part)
    except BaseException as e:
        if not resume:
            part.unlink(missing_ok=True)
        if isinstance(e, AssetError) or not isinstance(e, Exception):
            raise
        if isinstance(e, (urllib.error.URLError, OSError, TimeoutError)):
            reason = getattr(e, "reason", None) or e
            raise AssetError(
                f"{url}: download failed ({reason}); check the connection and run the fetch again"
            ) from None
        # http.client.IncompleteRead and friends
        raise AssetError(f"{url}: download failed ({type(e).__name__}: {e}); run the fetch again") from None
    if verify is not None:
        try:
            verify(part)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    os.replace(part, dest)
    fsync_path(dest.parent)
    return dest


def fetch(
    names=PRODUCT_ASSETS,
    dest_root: Path | None = None,
    base_url: str | None = None,
    progress_factory: Callable[[str], Callable[[int, int | None], None]] | None = None,
) -> list[Path]:
    """Download the named assets into `dest_root` (default: the user cache), skipping good copies.

    `base_url` replaces the upstream host (a mirror, or a local server in tests): the file is then
    fetched from `base_url/<name>`.
    """
    dest_root = Path(dest_root) if dest_root is not None else cache_dir() / "assets"
    out = []
    for name in names:
        asset = ASSETS[name]
        dest = dest_root / name
        if dest.is_file() and sha256_of(dest) == asset.sha256:
            out.append(dest)
            continue
        url = f"{url_of(base_url).rstrip('/')}/{name}" if base_url else asset.url
        progress = progress_factory(name) if progress_factory else None
        out.append(download(url, dest, asset.sha256, progress))
    return out
