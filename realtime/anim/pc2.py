"""PC2 point cache (exact vertices every frame) and the base OBJ it animates: Blender's Mesh Cache
modifier (format PC2) reads it on the imported OBJ. World frame of world.py (Y up), metres.

PC2 layout (little endian): b"POINTCACHE2\\0", int32 version 1, int32 points, float32 start frame,
float32 sample rate (frames per sample, 1), int32 samples, then float32 x y z per point per sample.
Samples are evenly spaced from the track's first to its last frame; frames where the track was not seen
are linearly interpolated between the nearest seen ones.
"""

from __future__ import annotations

import struct

import numpy as np

HEADER = struct.Struct("<12siiffi")
MAGIC = b"POINTCACHE2\0"


def every_frame(verts: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(T,V,3) at increasing `frames` -> (last-first+1, V,3), gaps linearly interpolated."""
    every = np.arange(frames[0], frames[-1] + 1)
    hi = np.clip(np.searchsorted(frames, every), 0, len(frames) - 1)
    lo = np.clip(hi - 1, 0, None)
    exact = frames[hi] == every
    lo = np.where(exact, hi, lo)
    span = np.maximum(frames[hi] - frames[lo], 1)
    t = np.where(exact, 0.0, (every - frames[lo]) / span)[:, None, None]
    return ((1 - t) * verts[lo] + t * verts[hi]).astype(np.float32)


def pc2_bytes(samples: np.ndarray, start_frame: float) -> bytes:
    samples = np.ascontiguousarray(samples, "<f4")
    header = HEADER.pack(MAGIC, 1, samples.shape[1], float(start_frame), 1.0, samples.shape[0])
    return header + samples.tobytes()


def read_pc2(data: bytes) -> tuple[np.ndarray, float]:
    """The inverse of pc2_bytes: (samples (S,V,3), start frame)."""
    magic, version, points, start, rate, count = HEADER.unpack_from(data)
    if magic != MAGIC or version != 1:
        raise ValueError("not a PC2 point cache")
    body = np.frombuffer(data, "<f4", count * points * 3, HEADER.size)
    return body.reshape(count, points, 3), start


def obj_text(verts: np.ndarray, faces: np.ndarray) -> str:
    """The base mesh, through trimesh (vertex order kept: process=False)."""
    import trimesh

    mesh = trimesh.Trimesh(np.asarray(verts, np.float64), np.asarray(faces), process=False)
    return trimesh.exchange.obj.export_obj(
        mesh,
        include_normals=False,
        include_color=False,
        include_texture=False,
        digits=6,
        header="mega-rt base mesh for the PC2 point cache beside it (world: Y up, metres)",
    )
