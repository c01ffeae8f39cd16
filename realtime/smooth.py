"""Per-track temporal smoothing: the One-Euro filter (Casiez et al., CHI 2012) on vertices and camera.

The cutoff frequency rises with speed (fast motion stays responsive, slow jitter is removed). In the
stochastic mode the per-vertex sample spread sets how much a vertex is trusted: the cutoff is divided
by 1 + std / std_ref, so confident parts follow the measurements and ambiguous parts are smoothed.
State lives per track id; tracks unseen for `forget_after` frames are dropped. All the people of a
frame are filtered together (their states are stacked), no per-vertex Python loop. It runs on the host,
on the results realtime/collect.py read back (numpy), so smoothing adds no device read-back.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff, dt: float):
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroSmoother:
    def __init__(
        self,
        fps: float,
        min_cutoff: float = 1.0,
        beta: float = 0.5,
        d_cutoff: float = 1.0,
        std_ref: float = 0.02,
        forget_after: int = 30,
    ):
        self.dt = 1.0 / max(fps, 1e-3)
        self.min_cutoff, self.beta, self.d_cutoff, self.std_ref = min_cutoff, beta, d_cutoff, std_ref
        self.forget_after = forget_after
        self.state: dict[int, dict] = {}  # track id -> {"x", "dx", "last"}

    def __call__(self, frame_index: int, track_ids, verts, cam_t, vertex_std=None) -> tuple[np.ndarray, np.ndarray]:
        """(K,) ids, (K,V,3) verts in the camera frame, (K,3) translations -> smoothed (verts, cam_t), float32.

        Rows with id -1 (untracked) pass through unfiltered."""
        verts, cam_t = np.asarray(verts, np.float32), np.asarray(cam_t, np.float32)
        if verts.shape[0] == 0:
            return verts, cam_t
        # filter the body shape relative to its translation, and the translation separately: a person
        # walking should not blur their limbs
        x = np.concatenate([(verts - cam_t[:, None]).reshape(len(verts), -1), cam_t], 1)  # (K, 3V+3)
        ids = [int(i) for i in np.asarray(track_ids).tolist()]
        known = [k for k, i in enumerate(ids) if i >= 0 and i in self.state]
        out = x.copy()
        if known:
            prev = np.stack([self.state[ids[k]]["x"] for k in known])
            dprev = np.stack([self.state[ids[k]]["dx"] for k in known])
            cur = x[known]
            dx = (cur - prev) / self.dt
            a_d = _alpha(self.d_cutoff, self.dt)
            dx_hat = dprev + a_d * (dx - dprev)
            speed = np.linalg.norm(dx_hat.reshape(len(known), -1, 3), axis=-1)  # per vertex (and the translation)
            cutoff = self.min_cutoff + self.beta * speed
            if vertex_std is not None:
                std = np.asarray(vertex_std, np.float32)[known]
                std = np.concatenate([std, std.mean(1, keepdims=True)], 1)
                cutoff = cutoff / (1.0 + std / self.std_ref)
            a = np.repeat(_alpha(cutoff, self.dt), 3, axis=1)
            out[known] = prev + a * (cur - prev)
            for j, k in enumerate(known):
                self.state[ids[k]].update(x=out[k].copy(), dx=dx_hat[j], last=frame_index)
        for k, i in enumerate(ids):
            if i >= 0 and i not in self.state:
                self.state[i] = {"x": x[k].copy(), "dx": np.zeros_like(x[k]), "last": frame_index}
        for i in [i for i, s in self.state.items() if frame_index - s["last"] > self.forget_after]:
            del self.state[i]
        cam_s = out[:, -3:]
        return out[:, :-3].reshape(verts.shape) + cam_s[:, None], np.ascontiguousarray(cam_s)
