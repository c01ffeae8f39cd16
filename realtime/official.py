"""The official MEGA checkpoints: Zenodo record 14974141 read through its REST API, each file verified
against the record's checksum, unpacked when the record holds archives, loaded strictly once, and placed
in the official layout in the cache, with its sha256 in a lock file:

    <cache>/weights/CVQMAE/mega_hrnet, mega_resnet, mega_vit    MEGA (HRNet-W48, ResNet-50, ViT-H)
    <cache>/weights/MESH_VQVAE/mesh_vqvae_54                    the Mesh-VQ-VAE tokenizer
    <cache>/weights/VQMAE/mega_pretrained                       the pre-trained VQMAE (on request)
    <cache>/weights/official.lock.json                          sha256 and size of every file installed

A later fetch, `install_from` (a folder or archive copied from elsewhere, offline) and the weight
resolution check files against the lock. Downloads resume (HTTP Range into `<file>.part`); a file that
fails a check never reaches its final name; two fetches into one cache take turns (fcntl lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

RECORD_ID = "14974141"
RECORD_URL = f"https://zenodo.org/records/{RECORD_ID}"
DEFAULT_API = "https://zenodo.org/api"
API_ENV = "MEGA_RT_ZENODO_API"
OFFLINE_ENV = "MEGA_RT_OFFLINE"
LOCK_FILE = "official.lock.json"
LOCK_FORMAT = "mega-rt-weights-lock/1"
BACKBONES = ("hrnet", "resnet", "vit")
MESH = "MESH_VQVAE/mesh_vqvae_54"
VQMAE = "VQMAE/mega_pretrained"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# suffixes a record may give a checkpoint file that the official layout names without one
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")

Progress = Callable[[int, "int | None"], None]


class OfficialError(RuntimeError):
    """The official weights cannot be fetched or installed; the message says why and what to do."""


def mega_relpath(backbone: str) -> str:
    if backbone not in BACKBONES:
        raise OfficialError(f"backbone {backbone!r}: expected one of {', '.join(BACKBONES)}")
    return f"CVQMAE/mega_{backbone}"


def wanted(backbones=("hrnet",), vqmae: bool = False) -> list[str]:
    """The official-layout paths of MEGA for each backbone, the Mesh-VQ-VAE, and the VQMAE if asked."""
    out = [mega_relpath(b) for b in backbones] + [MESH]
    return out + [VQMAE] if vqmae else out


def weights_dir() -> Path:
    from train.assets import cache_dir

    return cache_dir() / "weights"


def api_url(explicit: str | None = None) -> str:
    return (explicit or os.environ.get(API_ENV) or DEFAULT_API).rstrip("/")


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class RecordFile:
    key: str
    size: int
    checksum: tuple[str, str]  # ("md5", hex)
    url: str


def read_record(api: str | None = None, record_id: str = RECORD_ID, timeout: float = 30.0) -> list[RecordFile]:
    """The files of a Zenodo record (GET {api}/records/{id}); fields the record adds are ignored."""
    import urllib.error
    import urllib.request

    url = f"{api_url(api)}/records/{record_id}"
    try:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise OfficialError(f"{url}: the record API answered HTTP {e.code}; check --api-url / ${API_ENV}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise OfficialError(
            f"{url}: cannot reach the record API ({reason}); check the connection, or install offline "
            f"with `mega-rt fetch --weights official --from DIR`"
        ) from None
    except ValueError as e:
        raise OfficialError(f"{url}: the answer is not JSON ({e})") from None
    return parse_record(data, url)


def parse_record(data, url: str = "record") -> list[RecordFile]:
    files = data.get("files") if isinstance(data, dict) else None
    if isinstance(files, dict):  # the InvenioRDM shape: {"entries": {key: {...}} or [...], ...}
        files = files.get("entries")
        files = list(files.values()) if isinstance(files, dict) else files
    if not isinstance(files, list) or not files:
        raise OfficialError(f"{url}: the record lists no files")
    out = []
    for f in files:
        try:
            key = str(f.get("key") or f["filename"])
            algo, _, digest = str(f["checksum"]).partition(":")
            links = f.get("links") or {}
            link = links.get("content") or links.get("self") or links.get("download")
            if not link or not digest:
                raise KeyError("links" if not link else "checksum")
            out.append(RecordFile(key, int(f["size"]), (algo.lower(), digest.lower()), link))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise OfficialError(f"{url}: a file entry lacks {e} (key, size, checksum, links)") from None
    return out


def _plain_name(key: str) -> str:
    name = PurePosixPath(key).name
    for suffix in _CHECKPOINT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def locate(files: list[RecordFile], relpaths: list[str]) -> tuple[dict[str, RecordFile], list[RecordFile]]:
    """(official path -> the record's plain file of that name, the record's archives)."""
    by_name = {_plain_name(f.key): f for f in files if not is_archive(f.key)}
    direct = {r: by_name[PurePosixPath(r).name] for r in relpaths if PurePosixPath(r).name in by_name}
    return direct, [f for f in files if is_archive(f.key)]


# -- the lock file ------------------------------------------------------------------------------------


def read_lock(folder: Path) -> dict:
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if data.get("format") != LOCK_FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
    except (ValueError, KeyError, TypeError) as e:
        raise OfficialError(f"{path}: not a mega-rt weights lock ({e}); remove it and fetch again") from None
    return files


def _write_lock(folder: Path, files: dict) -> None:
    from train.io import write_json_atomic

    write_json_atomic(Path(folder) / LOCK_FILE, {"format": LOCK_FORMAT, "record": RECORD_ID, "files": files})


def _record(folder: Path, relpath: str, origin: str) -> dict:
    from train.assets import sha256_of

    path = Path(folder) / relpath
    files = read_lock(folder)
    files[relpath] = {"sha256": sha256_of(path), "size": path.stat().st_size, "from": origin}
    _write_lock(folder, files)
    return files[relpath]


def check_installed(folder: Path, relpath: str, full: bool = True) -> str:
    """'ok' | 'missing' | 'not in the lock' | 'size differs from the lock' | 'sha256 differs from the
    lock'; `full=False` checks the size only (cheap enough for every run)."""
    from train.assets import sha256_of

    path = Path(folder) / relpath
    if not path.is_file():
        return "missing"
    entry = read_lock(folder).get(relpath)
    if entry is None:
        return "not in the lock"
    if path.stat().st_size != entry.get("size"):
        return "size differs from the lock"
    if full and sha256_of(path) != entry.get("sha256"):
        return "sha256 differs from the lock"
    return "ok"


@contextlib.contextmanager
def fetch_lock(folder: Path, echo: Callable[[str], None] = print):
    """Hold the cache's fetch lock: a second fetch waits until the first is done."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".fetch.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo(f"another mega-rt fetch is installing into {folder}; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- strict loading -----------------------------------------------------------------------------------


def strict_load(relpath: str, path: Path) -> None:
    """Load `path` as the official file `relpath` names, strictly; OfficialError naming it otherwise."""
    from train.assets import AssetError
    from train.checkpoint import CheckpointError, load_mega, load_mesh_vqvae, load_pretrain_model

    try:
        if relpath.startswith("CVQMAE/"):
            _, cfg = load_mega(path)
            expected = relpath.rsplit("_", 1)[1]
            if cfg.backbone != expected:
                raise CheckpointError(f"{path}: a MEGA with a {cfg.backbone} backbone, not {expected}")
        elif relpath == VQMAE:
            load_pretrain_model(path)
        elif relpath == MESH:
            load_mesh_vqvae(path)
        else:
            raise CheckpointError(f"{relpath}: not an official checkpoint name")
    except (CheckpointError, AssetError) as e:
        raise OfficialError(f"{relpath}: does not load as the official {relpath} ({e})") from None


# -- fetching -----------------------------------------------------------------------------------------


def fetch_official(
    backbones=("hrnet",),
    vqmae: bool = False,
    dest: Path | None = None,
    api: str | None = None,
    record_id: str = RECORD_ID,
    progress_factory: Callable[[str], Progress] | None = None,
    echo: Callable[[str], None] = print,
    timeout: float = 30.0,
    attempts: int = 3,
) -> dict[str, Path]:
    """Install the official files for `backbones` (+ the Mesh-VQ-VAE, + the VQMAE) into `dest` (default:
    the cache) from the record; files already installed and matching the lock are kept."""
    dest = Path(dest) if dest is not None else weights_dir()
    relpaths = wanted(backbones, vqmae)
    with fetch_lock(dest, echo):
        todo = []
        for r in relpaths:
            state = check_installed(dest, r)
            if state == "ok":
                continue
            if state not in ("missing", "not in the lock"):
                _set_aside(dest / r, state, echo)
            todo.append(r)
        if todo:
            files = read_record(api, record_id, timeout)
            direct, archives = locate(files, todo)
            for r, f in direct.items():
                target = dest / r
                if target.is_file() and _digest(target, f.checksum[0]) == f.checksum[1]:
                    strict_load(r, target)  # a copy placed by hand that the record vouches for
                else:
                    _download(
                        f, target, progress_factory, echo, timeout, attempts, verify=lambda p, r=r: strict_load(r, p)
                    )
                _record(dest, r, f"zenodo:{record_id}/{f.key}")
                echo(f"{r}: verified ({f.checksum[0]} of the record, loaded strictly)")
            remaining = [r for r in todo if r not in direct]
            for a in archives if remaining else []:
                archive = dest / ".downloads" / PurePosixPath(a.key).name
                _download(a, archive, progress_factory, echo, timeout, attempts)
                found = _install_members(archive, remaining, dest, f"zenodo:{record_id}/{a.key}", echo)
                archive.unlink(missing_ok=True)
                remaining = [r for r in remaining if r not in found]
                if not remaining:
                    break
            if remaining:
                keys = ", ".join(f.key for f in files)
                raise OfficialError(
                    f"record {record_id} ({api_url(api)}) holds no {', '.join(remaining)} (its files: {keys}); "
                    f"download them by hand from {RECORD_URL} and install with `mega-rt fetch --weights official --from DIR`"
                )
    return {r: dest / r for r in relpaths}


def _set_aside(path: Path, why: str, echo) -> None:
    """A file that fails its check leaves its final name (kept beside it for inspection)."""
    bad = path.with_name(path.name + ".rejected")
    os.replace(path, bad)
    echo(f"{path}: {why}; moved to {bad.name} and fetched again")


def _digest(path: Path, algo: str) -> str:
    import hashlib

    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _download(f: RecordFile, target: Path, progress_factory, echo, timeout, attempts, verify=None) -> None:
    from train.assets import AssetError, download_checked

    part = target.with_name(target.name + ".part")
    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.is_file() else 0
        if have:
            echo(f"{f.key}: resuming at {have} of {f.size} bytes")
        progress = progress_factory(f.key) if progress_factory else None
        try:
            download_checked(f.url, target, f.checksum, f.size, progress, timeout, resume=True, verify=verify)
            return
        except AssetError as e:
            grew = part.is_file() and part.stat().st_size > have
            if attempt == attempts or not grew:
                raise OfficialError(f"{f.key}: {e}") from None
            echo(f"{f.key}: transfer broke off ({e}); resuming")


def _member_parts(name: str) -> tuple[str, ...] | None:
    """The path parts of an archive member, or None for a name that would leave the folder."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return p.parts


def _matches(parts: tuple[str, ...], relpath: str) -> bool:
    want = PurePosixPath(relpath).parts
    return len(parts) >= len(want) and parts[-len(want) :] == want


def archive_members(archive: Path, relpaths: list[str]):
    """Yield (relpath, open binary stream) for each regular member of `archive` in the official layout.

    Members with absolute or `..` names, links and devices are never read; tar members also pass
    tarfile's 'data' filter."""
    import stat
    import tarfile
    import zipfile

    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = _member_parts(info.filename)
                if parts is None or info.is_dir() or stat.S_ISLNK(info.external_attr >> 16):
                    continue
                for r in relpaths:
                    if _matches(parts, r):
                        with zf.open(info) as stream:
                            yield r, stream
        return
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise OfficialError(f"{archive}: not a readable zip or tar archive ({e})") from None
    with tf:
        for member in tf:
            parts = _member_parts(member.name)
            if parts is None or not member.isfile():
                continue
            try:
                tarfile.data_filter(member, str(archive.parent))
            except tarfile.FilterError:
                continue
            for r in relpaths:
                if _matches(parts, r):
                    stream = tf.extractfile(member)
                    if stream is not None:
                        with stream:
                            yield r, stream


def _install_members(
    archive: Path, relpaths: list[str], dest: Path, origin: str, echo, lock: dict | None = None
) -> set[str]:
    found = set()
    for r, stream in archive_members(archive, relpaths):
        if r in found:
            continue
        _install_stream(stream, r, dest, origin, echo, lock)
        found.add(r)
    return found


def _install_stream(stream, relpath: str, dest: Path, origin: str, echo, lock: dict | None) -> None:
    """Copy `stream` to dest/relpath: checked against `lock` (when it lists the file) and loaded strictly
    before it takes its final name."""
    from train.assets import sha256_of
    from train.io import atomic_write

    target = Path(dest) / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    entry = (lock or {}).get(relpath)

    def verify(tmp: Path) -> None:
        if entry is not None and sha256_of(tmp) != entry.get("sha256"):
            raise OfficialError(
                f"{relpath} from {origin}: sha256 differs from the lock ({str(entry.get('sha256'))[:12]}…); "
                f"the copy is corrupt or a different file - nothing was installed"
            )
        strict_load(relpath, tmp)

    with atomic_write(target, verify=verify) as tmp:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
    _record(dest, relpath, origin)
    how = "matches the lock" if entry is not None else "not in any lock: its sha256 is now recorded"
    echo(f"{relpath}: installed from {origin} ({how}; loaded strictly)")


def install_from(
    source: Path,
    backbones=("hrnet",),
    vqmae: bool = False,
    dest: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Install the official files from a folder or archive in the official layout (offline).

    Each file is checked against the cache's lock or a lock file in `source` (a copied cache), then
    loaded strictly."""
    source = Path(source).expanduser()
    dest = Path(dest) if dest is not None else weights_dir()
    relpaths = wanted(backbones, vqmae)
    if not source.exists():
        raise OfficialError(f"--from {source}: no such folder or archive")
    with fetch_lock(dest, echo):
        lock = read_lock(dest)
        if source.is_dir():
            for cand in (source / LOCK_FILE, source / "weights" / LOCK_FILE):
                if cand.is_file():
                    lock = {**read_lock(cand.parent), **lock}
            todo = [r for r in relpaths if check_installed(dest, r) != "ok"]
            missing = []
            for r in todo:
                src = _find_in_folder(source, r)
                if src is None:
                    missing.append(r)
                    continue
                with open(src, "rb") as stream:
                    _install_stream(stream, r, dest, str(src), echo, lock)
        else:
            if not is_archive(source.name):
                raise OfficialError(f"--from {source}: expected a folder or a {', '.join(ARCHIVE_SUFFIXES)} archive")
            todo = [r for r in relpaths if check_installed(dest, r) != "ok"]
            found = _install_members(source, todo, dest, str(source), echo, lock)
            missing = [r for r in todo if r not in found]
        if missing:
            raise OfficialError(
                f"--from {source}: holds no {', '.join(missing)} (expected the official layout, e.g. "
                f"{source}/{missing[0]}); get the files from {RECORD_URL}"
            )
    return {r: dest / r for r in relpaths}


def _find_in_folder(source: Path, relpath: str) -> Path | None:
    for base in (source, source / "checkpoint", source / "weights"):
        p = base / relpath
        if p.is_file() and not p.is_symlink():
            return p
    for p in sorted(source.rglob(PurePosixPath(relpath).name)):
        if p.is_file() and not p.is_symlink() and _matches(p.relative_to(source).parts, relpath):
            return p
    return None


def installed(backbone: str = "hrnet", folder: Path | None = None, full: bool = False) -> tuple[Path, Path] | None:
    """(MEGA, Mesh-VQ-VAE) of `backbone` in the cache when both are installed and match the lock."""
    folder = Path(folder) if folder is not None else weights_dir()
    try:
        ok = all(check_installed(folder, r, full) == "ok" for r in (mega_relpath(backbone), MESH))
    except OfficialError:
        return None
    return (folder / mega_relpath(backbone), folder / MESH) if ok else None
