"""A posable synthetic body on the SMPL topology (6890 vertices), derived at run time from public data.

The SMPL model itself is licensed, so the synthetic ground truth is built from two public assets
(`train.assets`): the Mesh-VQ-VAE template mesh (`meshconv/template.ply`, SMPL faces) and the SMPL
part segmentation (`segmentation/smpl_vert_segmentation.json`, 24 parts = the 24 SMPL joints).

The template, as checked: units are **metres**, **+y is up**, the body **faces +z** and its **left side
is +x** (SMPL's canonical axes). It is a registered scan, not SMPL's mean shape: a 1.58 m tall woman
standing with her arms hanging at her sides (hands at y ~ +0.10, x ~ +-0.31), feet ~0.47 m apart, not
centred (feet at y ~ -0.58, pelvis near (0.006, 0.20, -0.27)) and slightly asymmetric (the right foot is
3.6 cm further back). That standing pose is the rest pose: a zero `body_pose` returns it exactly.

Rig (derived once, cached as an .npz keyed by the assets' sha256 and `RIG_VERSION`):
- kinematic tree = SMPL's; joint k rotates part k (the segmentation is SMPL's arg-max skinning).
- joint centre = centroid of the boundary band between part k and its parent part (the pelvis: the
  mean of its three children's centres).
- skinning weights = one-hot part labels diffused over the mesh graph, so only the few rings of
  vertices around each boundary blend (elbows and knees bend without tearing; segments stay rigid).
- left/right symmetry = mirror each part about x, rigidly align it to its mirror part (the template is
  not exactly symmetric), nearest vertex.

Rotations are axis-angle in the body axes above, as in SMPL: a joint rotates its subtree about axes
aligned with the rest frame. With the arms and legs hanging down this gives readable signs: hip flexion
(thigh forward) is -x, knee flexion +x, elbow flexion -x, shoulder abduction of the left arm +z.

The anatomical range of each joint (`JOINT_LIMITS`) belongs to the body; the pose prior that samples
inside it is `train.synthetic.poses`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from train import assets
from train.geometry import axis_angle_to_matrix
from train.io import atomic_write

RIG_VERSION = 1  # bump when the derivation below changes: invalidates cached rigs

TEMPLATE_ASSET = "meshconv/template.ply"
SEGMENTATION_ASSET = "segmentation/smpl_vert_segmentation.json"
NUM_VERTS = 6890
NUM_JOINTS = 24

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)  # fmt: skip
# Segmentation part that joint k moves (same index).
PART_NAMES = (
    "hips", "leftUpLeg", "rightUpLeg", "spine", "leftLeg", "rightLeg", "spine1", "leftFoot", "rightFoot",
    "spine2", "leftToeBase", "rightToeBase", "neck", "leftShoulder", "rightShoulder", "head", "leftArm",
    "rightArm", "leftForeArm", "rightForeArm", "leftHand", "rightHand", "leftHandIndex1", "rightHandIndex1",
)  # fmt: skip
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# joint index -> its mirror joint (left <-> right)
JOINT_MIRROR = tuple(
    JOINT_NAMES.index(n.replace("left_", "@").replace("right_", "left_").replace("@", "right_")) for n in JOINT_NAMES
)

# Shape parameters: log scale factors, 0 = the template. Applied per part about joint centres.
SHAPE_NAMES = ("stature", "torso_length", "arm_length", "leg_length", "girth")
NUM_SHAPE = len(SHAPE_NAMES)
_TORSO_PARTS = (3, 6, 9)
_ARM_PARTS = (16, 17, 18, 19)
_LEG_PARTS = (1, 2, 4, 5)
_GIRTH_PARTS = (0, 1, 2, 3, 4, 5, 6, 9, 12, 16, 17, 18, 19)  # not head, collars, hands, feet

_SMOOTH_ITERATIONS = 8  # diffusion steps: blend band of about +-4 edge rings (~5-7 cm at the elbow)
_MIN_WEIGHT = 1e-2  # smaller weights are leakage far from a boundary: dropped so segments stay rigid
_MAX_INFLUENCES = 4


# ----------------------------------------------------------------------------------------------------
# Reading the assets


def read_template_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Binary little-endian PLY with float x,y,z (+ any other vertex properties) and triangle faces.

    Returns verts (V,3) float32 and faces (F,3) int64.
    """
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY is supported")
    types = {"float": "<f4", "double": "<f8", "uchar": "u1", "char": "i1", "ushort": "<u2", "short": "<i2",
             "uint": "<u4", "int": "<i4"}  # fmt: skip
    counts, vertex_fields, element = {}, [], None
    for line in header:
        tok = line.split()
        if tok[:1] == ["element"]:
            element = tok[1]
            counts[element] = int(tok[2])
        elif tok[:1] == ["property"] and element == "vertex":
            vertex_fields.append((tok[2], types[tok[1]]))
        elif tok[:2] == ["property", "list"] and element == "face" and tok[2:4] != ["uchar", "int"]:
            raise ValueError(f"{path}: face lists must be 'uchar int'")
    offset = end + len(b"end_header\n")
    vdtype = np.dtype(vertex_fields)
    verts = np.frombuffer(data, vdtype, counts["vertex"], offset)
    face_dtype = np.dtype([("n", "u1"), ("idx", "<i4", 3)])
    faces = np.frombuffer(data, face_dtype, counts["face"], offset + vdtype.itemsize * counts["vertex"])
    if not (faces["n"] == 3).all():
        raise ValueError(f"{path}: only triangle meshes are supported")
    xyz = np.stack([verts["x"], verts["y"], verts["z"]], axis=1).astype(np.float32)
    return xyz, faces["idx"].astype(np.int64)


def read_segmentation(path: str | os.PathLike, num_verts: int = NUM_VERTS) -> np.ndarray:
    """(V,24) bool membership, columns in PART_NAMES order; every vertex in at least one part."""
    parts = json.loads(Path(path).read_text())
    if set(parts) != set(PART_NAMES):
        raise ValueError(f"{path}: expected the 24 SMPL parts, got {sorted(parts)}")
    member = np.zeros((num_verts, NUM_JOINTS), bool)
    for k, name in enumerate(PART_NAMES):
        member[np.asarray(parts[name], np.int64), k] = True
    if not member.any(1).all():
        raise ValueError(f"{path}: {int((~member.any(1)).sum())} vertices belong to no part")
    return member


# ----------------------------------------------------------------------------------------------------
# Deriving the rig


@dataclass(frozen=True)
class BodyRig:
    """Everything `SyntheticBody` needs, as numpy arrays (cached to disk)."""

    verts_template: np.ndarray  # (V,3) float32, metres, body axes
    faces: np.ndarray  # (F,3) int64
    vertex_part: np.ndarray  # (V,) int64 dominant part = joint index
    joints_rest: np.ndarray  # (24,3) float32
    skin_weights: np.ndarray  # (V,24) float32, rows sum to 1, at most 4 non-zero
    bone_dirs: np.ndarray  # (24,3) float32 unit vector along each part (length scaling axis)
    symmetry: np.ndarray  # (V,) int64: the vertex on the other side of the sagittal plane


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """(E,2) unique undirected edges, i < j."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.sort(e, axis=1)
    return np.unique(e, axis=0)


def _neighbour_mean_operator(edges: np.ndarray, num_verts: int) -> torch.Tensor:
    """Sparse (V,V) row-stochastic matrix: 1/2 self + 1/2 mean of the neighbours."""
    i = np.concatenate([edges[:, 0], edges[:, 1]])
    j = np.concatenate([edges[:, 1], edges[:, 0]])
    degree = np.bincount(i, minlength=num_verts).astype(np.float64)
    vals = 0.5 / degree[i]
    rows = np.concatenate([i, np.arange(num_verts)])
    cols = np.concatenate([j, np.arange(num_verts)])
    vals = np.concatenate([vals, np.full(num_verts, 0.5)])
    index = torch.from_numpy(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(
        index, torch.from_numpy(vals), (num_verts, num_verts), check_invariants=True
    ).coalesce()


def _joint_centres(verts: np.ndarray, edges: np.ndarray, member: np.ndarray) -> np.ndarray:
    joints = np.zeros((NUM_JOINTS, 3), np.float64)
    a, b = edges[:, 0], edges[:, 1]
    for k in range(1, NUM_JOINTS):
        p = PARENTS[k]
        # the band: both ends of every edge that crosses from part k to its parent (overlapping
        # labels make it a few rings wide), so its centroid is the centre of the cross-section
        cross = (member[a, k] & member[b, p]) | (member[a, p] & member[b, k])
        band = np.unique(np.concatenate([a[cross], b[cross]]))
        if band.size == 0:
            raise ValueError(f"part {PART_NAMES[k]} does not touch its parent {PART_NAMES[p]}")
        joints[k] = verts[band].mean(0)
    joints[0] = joints[[1, 2, 3]].mean(0)
    return joints


def _skin_weights(edges: np.ndarray, member: np.ndarray) -> np.ndarray:
    w = torch.from_numpy(member / member.sum(1, keepdims=True))  # overlapping vertices split evenly
    op = _neighbour_mean_operator(edges, member.shape[0])
    for _ in range(_SMOOTH_ITERATIONS):
        w = torch.sparse.mm(op, w)
    w = w.numpy()
    # keep the strongest influences; far from a boundary this restores exact one-hot rows
    order = np.argsort(-w, axis=1)
    keep = np.zeros_like(w, bool)
    np.put_along_axis(keep, order[:, :_MAX_INFLUENCES], True, axis=1)
    w = np.where(keep & (w >= _MIN_WEIGHT), w, 0.0)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _bone_dirs(joints: np.ndarray) -> np.ndarray:
    dirs = np.zeros((NUM_JOINTS, 3))
    for k in range(NUM_JOINTS):
        children = [c for c in range(NUM_JOINTS) if PARENTS[c] == k]
        if len(children) == 1:
            d = joints[children[0]] - joints[k]
        elif children:  # pelvis and upper spine branch: their length axis is the spine
            d = np.array([0.0, 1.0, 0.0])
        else:  # leaves (head, toes, fingers) continue their parent's bone
            d = joints[k] - joints[PARENTS[k]]
        dirs[k] = d / np.linalg.norm(d)
    return dirs


def _rigid_fit(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R, t minimising |src @ R.T + t - dst| (Kabsch)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((src - mu_s).T @ (dst - mu_d))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rot, mu_d - mu_s @ rot.T


def _nearest(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    d2 = (src**2).sum(1)[:, None] - 2 * src @ dst.T + (dst**2).sum(1)[None, :]
    return d2.argmin(1)


def _minimal_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a to unit vector b (no twist about them)."""
    v, c = np.cross(a, b), float(a @ b)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def _symmetry_map(
    verts: np.ndarray, joints: np.ndarray, bone_dirs: np.ndarray, vertex_part: np.ndarray, edges: np.ndarray
) -> np.ndarray:
    """Vertex i -> its mirror vertex (nearest vertex of the mirrored template, part by part).

    The scan's pose is not symmetric, so each mirrored part is first aligned to its partner: along
    the bones (a rigid ICP alone spins limbs about their axis), then rigid ICP, then a smooth non-rigid
    pull (nearest-vertex displacements diffused over the mesh) for soft-tissue differences.
    """
    verts = verts.astype(np.float64)
    mirror = np.array([-1.0, 1.0, 1.0])
    moved = verts * mirror
    groups = []
    for k in range(NUM_JOINTS):
        src_idx = np.flatnonzero(vertex_part == k)
        dst_idx = np.flatnonzero(vertex_part == JOINT_MIRROR[k])
        dst = verts[dst_idx]
        rot = _minimal_rotation(bone_dirs[k] * mirror, bone_dirs[JOINT_MIRROR[k]])
        part = (moved[src_idx] - joints[k] * mirror) @ rot.T + joints[JOINT_MIRROR[k]]
        for _ in range(10):
            rot, t = _rigid_fit(part, dst[_nearest(part, dst)])
            part = part @ rot.T + t
        moved[src_idx] = part
        groups.append((src_idx, dst_idx))

    def match(points):
        sym = np.zeros(len(points), np.int64)
        for src_idx, dst_idx in groups:
            sym[src_idx] = dst_idx[_nearest(points[src_idx], verts[dst_idx])]
        return sym

    op = _neighbour_mean_operator(edges, len(verts))
    for _ in range(12):
        pull = torch.from_numpy(verts[match(moved)] - moved)
        for _ in range(15):
            pull = torch.sparse.mm(op, pull)
        moved = moved + 0.5 * pull.numpy()
    return match(moved)


def derive_rig(verts: np.ndarray, faces: np.ndarray, member: np.ndarray) -> BodyRig:
    """The rig from the template mesh and the (V,24) part membership (pure numpy/torch, ~1 s)."""
    edges = mesh_edges(faces)
    joints = _joint_centres(verts.astype(np.float64), edges, member)
    weights = _skin_weights(edges, member)
    vertex_part = weights.argmax(1).astype(np.int64)
    bone_dirs = _bone_dirs(joints)
    return BodyRig(
        verts_template=verts.astype(np.float32),
        faces=faces.astype(np.int64),
        vertex_part=vertex_part,
        joints_rest=joints.astype(np.float32),
        skin_weights=weights,
        bone_dirs=bone_dirs.astype(np.float32),
        symmetry=_symmetry_map(verts, joints, bone_dirs, vertex_part, edges),
    )


def load_rig(assets_dir: str | os.PathLike | None = None, use_cache: bool = True) -> BodyRig:
    """Find the assets, derive the rig (or read it from the user cache, keyed by the assets' sha256)."""
    template = assets.find_asset(TEMPLATE_ASSET, assets_dir)
    segmentation = assets.find_asset(SEGMENTATION_ASSET, assets_dir)
    key = f"{assets.sha256_of(template)[:16]}-{assets.sha256_of(segmentation)[:16]}"
    cache = assets.cache_dir() / "body" / f"rig-v{RIG_VERSION}-{key}.npz"
    if use_cache and cache.is_file():
        with np.load(cache) as z:
            return BodyRig(**{f: z[f] for f in BodyRig.__dataclass_fields__})
    verts, faces = read_template_ply(template)
    rig = derive_rig(verts, faces, read_segmentation(segmentation, len(verts)))
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache) as tmp:  # parallel processes may derive the same rig at once
            np.savez(tmp, **{f: getattr(rig, f) for f in BodyRig.__dataclass_fields__})
    return rig


# ----------------------------------------------------------------------------------------------------
# The posable body


class PosedBody(NamedTuple):
    verts: torch.Tensor  # (B,V,3) body axes, same origin as the template
    joints: torch.Tensor  # (B,24,3)


class SyntheticBody(torch.nn.Module):
    """Linear blend skinning of the template: `pose(body_pose, global_orient, shape)`.

    Buffers move with `.to(device)`; everything is batched, differentiable torch.
    """

    def __init__(self, rig: BodyRig | None = None):
        super().__init__()
        rig = rig if rig is not None else load_rig()
        self.register_buffer("verts_template", torch.from_numpy(rig.verts_template), persistent=False)
        self.register_buffer("faces", torch.from_numpy(rig.faces), persistent=False)
        self.register_buffer("skin_weights", torch.from_numpy(rig.skin_weights), persistent=False)
        self.register_buffer("joints_rest", torch.from_numpy(rig.joints_rest), persistent=False)
        self.register_buffer("bone_dirs", torch.from_numpy(rig.bone_dirs), persistent=False)
        self.register_buffer("vertex_part", torch.from_numpy(rig.vertex_part), persistent=False)
        self.register_buffer("symmetry", torch.from_numpy(rig.symmetry), persistent=False)
        # which shape parameter scales each part's length and girth (one-hot masks, (24,NUM_SHAPE))
        length_of = torch.zeros(NUM_JOINTS, NUM_SHAPE)
        for parts, name in ((_TORSO_PARTS, "torso_length"), (_ARM_PARTS, "arm_length"), (_LEG_PARTS, "leg_length")):
            length_of[list(parts), SHAPE_NAMES.index(name)] = 1.0
        girth_of = torch.zeros(NUM_JOINTS, NUM_SHAPE)
        girth_of[list(_GIRTH_PARTS), SHAPE_NAMES.index("girth")] = 1.0
        self.register_buffer("_length_of", length_of, persistent=False)
        self.register_buffer("_girth_of", girth_of, persistent=False)

    def shaped(self, shape: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rest-pose verts (B,V,3) and joints (B,24,3) after per-part scaling.

        `shape` (B, NUM_SHAPE) log scale factors. Each part k gets S_k = g I + (l - g) d d^T about its
        joint (length l along its bone d, girth g across it), blended by the skinning weights so the
        scaling is smooth across joints; child joints move with their parent's S. Stature is a
        uniform scale about the pelvis. Written as displacements so a zero shape is exactly the template.
        """
        v = self.verts_template.expand(batch, -1, -1)
        j = self.joints_rest.expand(batch, -1, -1)
        if shape is None:
            return v, j
        shape = shape.to(v.dtype)
        length = torch.exp(shape @ self._length_of.T)  # (B,24)
        girth = torch.exp(shape @ self._girth_of.T)
        ddt = self.bone_dirs[:, :, None] * self.bone_dirs[:, None, :]  # (24,3,3)
        eye = torch.eye(3, dtype=v.dtype, device=v.device)
        scale_minus_eye = (girth - 1)[..., None, None] * eye + (length - girth)[..., None, None] * ddt  # (B,24,3,3)
        disp = [torch.zeros_like(j[:, 0])]
        for k in range(1, NUM_JOINTS):
            p = PARENTS[k]
            disp.append(disp[p] + (scale_minus_eye[:, p] @ (j[:, k] - j[:, p])[..., None])[..., 0])
        joint_disp = torch.stack(disp, 1)  # (B,24,3)
        # per vertex: sum_k w_k [D_k + (S_k - I)(v - J_k)] = M_v v + b_v
        m = torch.einsum("vk,bkij->bvij", self.skin_weights, scale_minus_eye)
        b = torch.einsum("vk,bki->bvi", self.skin_weights, joint_disp - (scale_minus_eye @ j[..., None])[..., 0])
        v = v + (m @ v[..., None])[..., 0] + b
        j = j + joint_disp
        stature = torch.exp(shape[:, SHAPE_NAMES.index("stature")])[:, None, None]
        root = j[:, :1]
        return v + (stature - 1) * (v - root), j + (stature - 1) * (j - root)

    def pose(
        self, body_pose: torch.Tensor, global_orient: torch.Tensor, shape: torch.Tensor | None = None
    ) -> PosedBody:
        """body_pose (B,23,3) and global_orient (B,3) axis-angle, shape (B,NUM_SHAPE) or None.

        Global orientation rotates about the pelvis joint (as SMPL); no translation is applied.
        """
        batch = body_pose.shape[0]
        verts_rest, joints_rest = self.shaped(shape, batch)
        verts_rest, joints_rest = verts_rest.to(body_pose.dtype), joints_rest.to(body_pose.dtype)
        rot_local = axis_angle_to_matrix(torch.cat([global_orient[:, None], body_pose], 1))  # (B,24,3,3)
        eye = torch.eye(3, dtype=body_pose.dtype, device=body_pose.device)
        rot_world = [rot_local[:, 0]]
        disp = [torch.zeros_like(joints_rest[:, 0])]  # posed joint - rest joint, exact zero at rest
        for k in range(1, NUM_JOINTS):
            p = PARENTS[k]
            rot_world.append(rot_world[p] @ rot_local[:, k])
            disp.append(disp[p] + ((rot_world[p] - eye) @ (joints_rest[:, k] - joints_rest[:, p])[..., None])[..., 0])
        rot_minus_eye = torch.stack(rot_world, 1) - eye  # (B,24,3,3)
        joint_disp = torch.stack(disp, 1)
        # v' = v + sum_k w_k [(R_k - I)(v - J_k) + D_k]: zero pose adds exact zeros
        weights = self.skin_weights.to(body_pose.dtype)
        m = torch.einsum("vk,bkij->bvij", weights, rot_minus_eye)
        b = torch.einsum("vk,bki->bvi", weights, joint_disp - (rot_minus_eye @ joints_rest[..., None])[..., 0])
        verts = verts_rest + (m @ verts_rest[..., None])[..., 0] + b
        return PosedBody(verts, joints_rest + joint_disp)


# ----------------------------------------------------------------------------------------------------
# Pose prior: anatomical limits (degrees; left side and centre, right side mirrored)

# joint: ((x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi)) in the body axes (x left, y up, z forward)
_LIMITS_DEG = {
    "left_hip": ((-120, 30), (-35, 35), (-20, 45)),  # x<0 flexion (thigh forward), z>0 abduction
    "spine1": ((-20, 35), (-20, 20), (-15, 15)),  # x>0 bends forward
    "left_knee": ((0, 145), (-10, 10), (-4, 4)),  # bends backwards only
    "spine2": ((-20, 35), (-20, 20), (-15, 15)),
    "left_ankle": ((-25, 45), (-20, 20), (-20, 20)),  # x>0 plantar flexion (toes down)
    "spine3": ((-20, 35), (-20, 20), (-15, 15)),
    "left_foot": ((-40, 20), (-5, 5), (-5, 5)),  # toes
    "neck": ((-30, 40), (-45, 45), (-25, 25)),
    "left_collar": ((-10, 10), (-20, 15), (-10, 25)),  # z>0 shrug
    "head": ((-25, 30), (-40, 40), (-20, 20)),
    "left_shoulder": ((-175, 50), (-70, 70), (-25, 165)),  # x<0 arm forward/up, z>0 arm out to the side
    "left_elbow": ((-145, 0), (-60, 60), (-4, 4)),  # bends forwards only; y: forearm twist
    "left_wrist": ((-30, 25), (-20, 20), (-70, 60)),  # z<0 flexion (palm towards the thigh)
    "left_hand": ((-10, 10), (-10, 10), (-80, 15)),  # fingers curl like the wrist
}


def _limits_table() -> torch.Tensor:
    table = torch.zeros(NUM_JOINTS - 1, 3, 2)
    for i, name in enumerate(JOINT_NAMES[1:]):
        if name.startswith("right_"):
            (xl, xh), (yl, yh), (zl, zh) = _LIMITS_DEG["left_" + name[6:]]
            lim = ((xl, xh), (-yh, -yl), (-zh, -zl))  # mirror about x: (x, y, z) -> (x, -y, -z)
        else:
            lim = _LIMITS_DEG[name]
        table[i] = torch.tensor(lim, dtype=torch.float32)
    return torch.deg2rad(table)


JOINT_LIMITS = _limits_table()  # (23,3,2) radians: [..., 0] lower, [..., 1] upper bound of each component


def clamp_to_limits(body_pose: torch.Tensor) -> torch.Tensor:
    lim = JOINT_LIMITS.to(body_pose)
    return torch.maximum(torch.minimum(body_pose, lim[..., 1]), lim[..., 0])


def within_limits(body_pose: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """(B,) bool: every component of every joint inside its limits."""
    lim = JOINT_LIMITS.to(body_pose)
    return ((body_pose >= lim[..., 0] - tol) & (body_pose <= lim[..., 1] + tol)).flatten(1).all(1)
