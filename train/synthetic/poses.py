"""The pose prior of the synthetic body: archetype poses, gait, body shapes and smooth motion for video.

Poses are `body_pose` (N,23,3) axis-angle in the body axes of `train.synthetic.body`, drawn as
archetypes (standing, walking, reaching, sitting) plus jitter and clamped to the body's `JOINT_LIMITS`.
Shapes are the body's log scale factors (`SHAPE_NAMES`). Video motion is a uniform cubic B-spline
through sampled keyframes (gestures) or a gait cycle driven by walking speed. Everything draws from an
explicit torch.Generator: same seed, same poses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from train.synthetic.body import JOINT_NAMES, NUM_JOINTS, NUM_SHAPE, clamp_to_limits

POSE_KINDS = ("standing", "walking", "reaching", "sitting")
_J = {n: i - 1 for i, n in enumerate(JOINT_NAMES) if i > 0}  # name -> body_pose index


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _relaxed_arms(pose: torch.Tensor, gen: torch.Generator, n: int):
    for side, sgn in (("left_", 1.0), ("right_", -1.0)):
        pose[:, _J[side + "shoulder"], 0] = torch.deg2rad(_uniform(gen, n, -30, 15))
        pose[:, _J[side + "shoulder"], 2] = sgn * torch.deg2rad(_uniform(gen, n, -6, 12))
        pose[:, _J[side + "elbow"], 0] = torch.deg2rad(_uniform(gen, n, -45, -5))
        pose[:, _J[side + "elbow"], 1] = sgn * torch.deg2rad(_uniform(gen, n, -20, 30))
        pose[:, _J[side + "wrist"], 2] = sgn * torch.deg2rad(_uniform(gen, n, -25, 10))
        pose[:, _J[side + "hand"], 2] = sgn * torch.deg2rad(_uniform(gen, n, -40, 0))


def _head_and_spine(pose: torch.Tensor, gen: torch.Generator, n: int, lean: tuple[float, float] = (-5, 10)):
    for j in ("spine1", "spine2", "spine3"):
        pose[:, _J[j], 0] = torch.deg2rad(_uniform(gen, n, *lean)) / 3
        pose[:, _J[j], 1] = torch.deg2rad(_uniform(gen, n, -8, 8))
        pose[:, _J[j], 2] = torch.deg2rad(_uniform(gen, n, -4, 4))
    pose[:, _J["neck"], 1] = torch.deg2rad(_uniform(gen, n, -25, 25))
    pose[:, _J["neck"], 0] = torch.deg2rad(_uniform(gen, n, -10, 15))
    pose[:, _J["head"], 1] = torch.deg2rad(_uniform(gen, n, -15, 15))
    pose[:, _J["head"], 2] = torch.deg2rad(_uniform(gen, n, -8, 8))


def standing_poses(n: int, gen: torch.Generator) -> torch.Tensor:
    pose = torch.zeros(n, NUM_JOINTS - 1, 3)
    _relaxed_arms(pose, gen, n)
    _head_and_spine(pose, gen, n)
    shift = _uniform(gen, n, -6, 6)  # weight on one leg
    for side, sgn in (("left_", 1.0), ("right_", -1.0)):
        pose[:, _J[side + "hip"], 0] = torch.deg2rad(_uniform(gen, n, -12, 4))
        pose[:, _J[side + "hip"], 2] = torch.deg2rad(shift + sgn * _uniform(gen, n, -4, 2))
        pose[:, _J[side + "knee"], 0] = torch.deg2rad(_uniform(gen, n, 0, 15))
        pose[:, _J[side + "ankle"], 0] = torch.deg2rad(_uniform(gen, n, -5, 8))
    return pose


@dataclass(frozen=True)
class GaitStyle:
    """Per-person walking style, amplitudes in degrees."""

    hip: float = 30.0
    knee: float = 55.0
    arm: float = 25.0
    elbow: float = 20.0
    lean: float = 4.0


def sample_gait_styles(n: int, gen: torch.Generator) -> list[GaitStyle]:
    values = torch.stack([_uniform(gen, n, lo, hi) for lo, hi in ((22, 36), (45, 65), (12, 35), (10, 35), (0, 10))], 1)
    return [GaitStyle(*map(float, row)) for row in values]


def walking_pose(phase: torch.Tensor, style: GaitStyle = GaitStyle()) -> torch.Tensor:
    """(T,) gait phase in radians (one cycle = two steps) -> (T,23,3) body pose.

    At phase 0 the left thigh passes the vertical moving forward (mid-swing: knee most bent).
    """
    t = phase.shape[0]
    pose = torch.zeros(t, NUM_JOINTS - 1, 3, dtype=phase.dtype)
    rad = math.pi / 180
    for side, offset in (("left_", 0.0), ("right_", math.pi)):
        ph = phase + offset
        forward = torch.sin(ph)  # thigh ahead of the body when > 0
        swing = torch.clamp(torch.cos(ph), min=0.0)  # leg moving forward
        # hips flex more than they extend (about +30 / -12 degrees in a normal gait)
        pose[:, _J[side + "hip"], 0] = -style.hip * rad * (0.3 + 0.7 * forward)
        pose[:, _J[side + "knee"], 0] = rad * (
            5 + style.knee * swing**1.5 + 8 * torch.clamp(-torch.cos(ph + 0.6), min=0) ** 4
        )
        pose[:, _J[side + "ankle"], 0] = rad * (10 * torch.sin(ph - 1.2))
        # the arm swings with the opposite leg
        pose[:, _J[side + "shoulder"], 0] = style.arm * rad * forward
        sgn = 1.0 if side == "left_" else -1.0
        pose[:, _J[side + "shoulder"], 2] = sgn * 6 * rad
        pose[:, _J[side + "elbow"], 0] = -rad * (style.elbow + 12 * torch.clamp(-forward, min=0))
        pose[:, _J[side + "hand"], 2] = sgn * -20 * rad
    for j in ("spine1", "spine2", "spine3"):
        pose[:, _J[j], 0] = style.lean * rad / 3
        pose[:, _J[j], 1] = 3 * rad * torch.sin(phase)  # the shoulders counter-rotate the pelvis
    return pose


def walking_poses(n: int, gen: torch.Generator) -> torch.Tensor:
    phase = _uniform(gen, n, 0, 2 * math.pi)
    styles = sample_gait_styles(n, gen)
    pose = torch.cat([walking_pose(phase[i : i + 1], styles[i]) for i in range(n)])
    upper_body = torch.zeros(n, NUM_JOINTS - 1, 3)
    _head_and_spine(upper_body, gen, n, lean=(0, 0))  # looking around while walking
    return pose + upper_body * 0.5


def reaching_poses(n: int, gen: torch.Generator) -> torch.Tensor:
    pose = standing_poses(n, gen)
    both = torch.rand(n, generator=gen) < 0.3
    left = torch.rand(n, generator=gen) < 0.5
    for side, sgn in (("left_", 1.0), ("right_", -1.0)):
        active = both | (left if side == "left_" else ~left)
        # forward/up reach, or out to the side (a wave)
        up = _uniform(gen, n, -165, -45)
        out = _uniform(gen, n, 0, 60)
        sideways = torch.rand(n, generator=gen) < 0.35
        flex = torch.where(sideways, _uniform(gen, n, -40, 0), up)
        abd = torch.where(sideways, _uniform(gen, n, 60, 150), out)
        j = _J[side + "shoulder"]
        pose[:, j, 0] = torch.where(active, torch.deg2rad(flex), pose[:, j, 0])
        pose[:, j, 2] = torch.where(active, sgn * torch.deg2rad(abd), pose[:, j, 2])
        j = _J[side + "elbow"]
        pose[:, j, 0] = torch.where(active, torch.deg2rad(_uniform(gen, n, -70, 0)), pose[:, j, 0])
    lean = torch.deg2rad(_uniform(gen, n, 0, 25)) / 3
    twist = torch.deg2rad(_uniform(gen, n, 3, 10)) * torch.where(left, 1.0, -1.0) * (~both)
    for j in ("spine1", "spine2", "spine3"):
        pose[:, _J[j], 0] += lean
        pose[:, _J[j], 1] += twist
    return pose


def sitting_poses(n: int, gen: torch.Generator) -> torch.Tensor:
    pose = torch.zeros(n, NUM_JOINTS - 1, 3)
    _head_and_spine(pose, gen, n, lean=(0, 25))
    spread = _uniform(gen, n, 0, 18)
    for side, sgn in (("left_", 1.0), ("right_", -1.0)):
        pose[:, _J[side + "hip"], 0] = torch.deg2rad(_uniform(gen, n, -100, -70))
        pose[:, _J[side + "hip"], 2] = sgn * torch.deg2rad(spread)
        pose[:, _J[side + "hip"], 1] = sgn * torch.deg2rad(_uniform(gen, n, -10, 5))
        pose[:, _J[side + "knee"], 0] = torch.deg2rad(_uniform(gen, n, 70, 110))
        pose[:, _J[side + "ankle"], 0] = torch.deg2rad(_uniform(gen, n, -10, 15))
        # hands resting on the lap
        pose[:, _J[side + "shoulder"], 0] = torch.deg2rad(_uniform(gen, n, -45, -15))
        pose[:, _J[side + "shoulder"], 2] = sgn * torch.deg2rad(_uniform(gen, n, 0, 15))
        pose[:, _J[side + "elbow"], 0] = torch.deg2rad(_uniform(gen, n, -100, -50))
        pose[:, _J[side + "hand"], 2] = sgn * torch.deg2rad(_uniform(gen, n, -40, 0))
    return pose


_ARCHETYPES = {
    "standing": standing_poses,
    "walking": walking_poses,
    "reaching": reaching_poses,
    "sitting": sitting_poses,
}


def sample_poses(
    n: int, gen: torch.Generator, kinds: tuple[str, ...] = POSE_KINDS, jitter_deg: float = 3.0
) -> tuple[torch.Tensor, list[str]]:
    """n plausible body poses (n,23,3), within JOINT_LIMITS, and the archetype of each."""
    unknown = set(kinds) - set(POSE_KINDS)
    if unknown:
        raise ValueError(f"unknown pose kinds {sorted(unknown)}; choose from {POSE_KINDS}")
    choice = torch.randint(len(kinds), (n,), generator=gen)
    pose = torch.zeros(n, NUM_JOINTS - 1, 3)
    for i, kind in enumerate(kinds):
        # every archetype is drawn for all n (a fixed number of draws), so one kind's samples do not
        # depend on how many of the others were chosen
        pose = torch.where((choice == i)[:, None, None], _ARCHETYPES[kind](n, gen), pose)
    pose = pose + torch.deg2rad(torch.tensor(jitter_deg)) * torch.randn(pose.shape, generator=gen)
    return clamp_to_limits(pose), [kinds[int(c)] for c in choice]


def sample_shapes(n: int, gen: torch.Generator, spread: float = 1.0) -> torch.Tensor:
    """(n, NUM_SHAPE) log scale factors: statures ~1.45-1.90 m, limbs +-8 %, girth 0.76-1.08."""
    # the template is a heavy-set 1.58 m woman: girth is mostly slimmer, stature mostly taller
    lo = torch.tensor([math.log(0.92), -0.06, -0.07, -0.07, math.log(0.76)])
    hi = torch.tensor([math.log(1.20), 0.06, 0.07, 0.08, math.log(1.08)])
    mid = (lo + hi) / 2
    return mid + spread * (hi - lo) * (torch.rand(n, NUM_SHAPE, generator=gen) - 0.5)


# ----------------------------------------------------------------------------------------------------
# Smooth motion for video


def bspline_interpolate(keyframes: torch.Tensor, num_frames: int, frames_per_key: int) -> torch.Tensor:
    """Uniform cubic B-spline through (K, ...) keyframes -> (num_frames, ...).

    The basis is non-negative and sums to one, so every frame is a convex combination of keyframes:
    it stays inside any box (such as JOINT_LIMITS) that holds the keyframes. Needs
    K >= ceil(num_frames / frames_per_key) + 3.
    """
    t = torch.arange(num_frames, dtype=keyframes.dtype) / frames_per_key
    seg = t.floor().long()
    u = (t - seg)[:, None]
    basis = torch.cat([(1 - u) ** 3, 3 * u**3 - 6 * u**2 + 4, -3 * u**3 + 3 * u**2 + 3 * u + 1, u**3], 1) / 6
    idx = seg[:, None] + torch.arange(4)
    if int(idx.max()) >= keyframes.shape[0]:
        raise ValueError(f"{keyframes.shape[0]} keyframes are too few for {num_frames} frames")
    k = keyframes[idx]  # (T,4,...)
    return (basis.reshape(num_frames, 4, *([1] * (keyframes.ndim - 1))) * k).sum(1)


def _keyframes_needed(num_frames: int, frames_per_key: int) -> int:
    return math.ceil(num_frames / frames_per_key) + 4


def gesture_sequence(
    num_frames: int, gen: torch.Generator, kinds: tuple[str, ...] = ("standing", "reaching"), frames_per_key: int = 30
) -> torch.Tensor:
    """(T,23,3) smooth motion through sampled keyframe poses (a person standing and gesturing)."""
    keys, _ = sample_poses(_keyframes_needed(num_frames, frames_per_key), gen, kinds)
    return bspline_interpolate(keys, num_frames, frames_per_key)


def walking_sequence(
    num_frames: int, gen: torch.Generator, fps: float, speed: torch.Tensor | float, stride_m: float = 1.4,
    style: GaitStyle | None = None, frames_per_key: int = 40,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(T,23,3) gait at `speed` m/s (scalar or (T,)) with a gently varying upper body, and the phase (T,).

    One gait cycle covers `stride_m` metres (two steps), so the feet keep pace with the body.
    """
    style = style or sample_gait_styles(1, gen)[0]
    speed = torch.as_tensor(speed, dtype=torch.float32).expand(num_frames)
    step = 2 * math.pi * speed / (stride_m * fps)  # phase advance per frame
    phase = _uniform(gen, 1, 0, 2 * math.pi) + torch.cumsum(step, 0) - step[0]
    keys = torch.zeros(_keyframes_needed(num_frames, frames_per_key), NUM_JOINTS - 1, 3)
    _head_and_spine(keys, gen, keys.shape[0], lean=(0, 0))
    upper = bspline_interpolate(keys, num_frames, frames_per_key) * 0.6
    return clamp_to_limits(walking_pose(phase, style) + upper), phase
