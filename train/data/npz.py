"""Memory-mapped reading of uncompressed .npz files (what `np.savez` writes).

A training set of image crops is larger than we want to hold in memory and is read in random order,
so loading whole shards would reread tens of MB per sample. An uncompressed npz member is a plain
.npy file stored in the zip, so it can be memory-mapped at its offset; compressed members are loaded.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header (30 bytes)


def open_npz(path: str | Path) -> dict[str, np.ndarray]:
    """name -> array (a read-only memmap where the member is stored uncompressed)."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as member:
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            fh.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
            name_len, extra_len = fields[-2], fields[-1]
            fh.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
            version = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(fh)
            if dtype.hasobject:
                raise ValueError(f"{path}: member {name} holds Python objects; cannot read it safely")
            out[name] = np.memmap(fh.name, dtype=dtype, mode="r", offset=fh.tell(), shape=shape,
                                  order="F" if fortran else "C")  # fmt: skip
    return out
