"""BVH motion capture: the SMPL kinematic tree, root position and per-joint rotations at every frame.

Units are centimetres (BVH's usual unit; import with scale 0.01 for metres), axes the world frame of
world.py (Y up). Offsets are the track's shaped rest skeleton; channels are `Xposition Yposition
Zposition Zrotation Xrotation Yrotation` on the root and `Zrotation Xrotation Yrotation` (degrees,
R = Rz @ Rx @ Ry) on every other joint. BVH frames are evenly spaced: a frame where the track was not seen
repeats the last frame where it was.
"""

from __future__ import annotations

import numpy as np

from realtime.anim.skeleton import PosedSkeleton
from realtime.anim.world import matrix_to_euler_zxy

CM = 100.0


def _contiguous(frames: np.ndarray) -> np.ndarray:
    """For every frame from the first to the last, the index of the latest key at or before it."""
    every = np.arange(frames[0], frames[-1] + 1)
    return np.searchsorted(frames, every, side="right") - 1


def bvh_text(skel: PosedSkeleton, fps: float, names: list[str]) -> str:
    parents = skel.parents
    children = {k: [c for c in range(len(parents)) if parents[c] == k] for k in range(len(parents))}
    lines = ["HIERARCHY"]

    def emit(k: int, depth: int):
        pad = "\t" * depth
        off = np.zeros(3) if k == 0 else skel.offsets[k] * CM
        lines.append(f"{pad}{'ROOT' if k == 0 else 'JOINT'} {names[k]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}\tOFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        if k == 0:
            lines.append(f"{pad}\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
        else:
            lines.append(f"{pad}\tCHANNELS 3 Zrotation Xrotation Yrotation")
        for c in children[k]:
            emit(c, depth + 1)
        if not children[k]:  # a leaf: BVH ends every chain in an End Site; half the last bone beyond it
            end = skel.offsets[k] * CM * 0.5
            lines.extend(
                [
                    f"{pad}\tEnd Site",
                    f"{pad}\t{{",
                    f"{pad}\t\tOFFSET {end[0]:.6f} {end[1]:.6f} {end[2]:.6f}",
                    f"{pad}\t}}",
                ]
            )
        lines.append(f"{pad}}}")

    emit(0, 0)
    order = []

    def walk(k):
        order.append(k)
        for c in children[k]:
            walk(c)

    walk(0)
    keys = _contiguous(skel.frame)
    euler = np.degrees(matrix_to_euler_zxy(skel.local_rot))[keys][:, order]  # (F,J,3) in hierarchy order
    motion = np.concatenate([skel.root_pos[keys] * CM, euler.reshape(len(keys), -1)], 1)
    lines += ["MOTION", f"Frames: {len(keys)}", f"Frame Time: {1.0 / fps:.8f}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in motion]
    return "\n".join(lines) + "\n"
