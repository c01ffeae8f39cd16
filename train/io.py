"""Writing files so that a reader never sees half of one: the only atomic-write helper of mega-rt.

A file is written under a hidden temporary name beside its destination (same folder, so the rename cannot
cross file systems), flushed to disk, optionally checked, then renamed over the destination. If anything
fails on the way, the temporary file is removed and the destination keeps whatever it held before.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path


def temp_path(path: str | os.PathLike) -> Path:
    """The hidden temporary name of `path` for this process: `.<stem>.<pid>.partial<suffix>` beside it.

    The suffix is kept so that writers which choose a format by extension (OpenCV, torch, numpy) still
    recognise it; the pid keeps two processes writing the same output apart."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a written file (or a folder's entries) to the disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and folders on some platforms) cannot be synced; the data is still written
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it is synced, `verify`-ed, then renamed to `path`.

    `verify(tmp)` may raise to refuse the file (the destination is then left untouched). On any exception
    the temporary file is removed and the exception propagates."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        fsync_path(tmp)
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent if str(path.parent) else ".")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = 1) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")
