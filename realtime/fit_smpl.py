"""SMPL parameters from meshes: per track, global orientation, body pose, translation per frame and one
shape vector, fitted to the mesh vertices (known correspondence) in the camera frame.

The body is smplx's linear blend skinning (`smplx.lbs.lbs`) on the arrays of an SMPL or SMPL-X model file,
read without running code from it (train.data.smpl.load_struct). Every frame of a track is one row of a
batch: a closed-form start (each joint's rotation by Kabsch on the vertices it carries), then L-BFGS on all
frames together; a frame left worse than the one before it starts again from that frame's solution (warm
start, frame to frame).

An SMPL-X body (10475 vertices) meets MEGA's SMPL-topology meshes (6890) through a vertex map, as smplx's
transfer_model does with its deformation-transfer files: either SMPL -> SMPL-X (smpl2smplx, 10475 x 6890;
the meshes are mapped and SMPL-X is fitted to them) or SMPL-X -> SMPL (smplx2smpl, 6890 x 10475; the posed
SMPL-X mesh is mapped and compared with the meshes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from realtime.anim.results import SMPL_SCHEMA as SCHEMA
from realtime.anim.results import read_results
from train.geometry import axis_angle_to_matrix

_BODY_JOINTS = {"smpl": 23, "smplx": 21}  # SMPL-X: the 21 body joints; jaw, eyes and fingers stay at rest
# smplx's SHAPE_SPACE_DIM and EXPRESSION_SPACE_DIM: an SMPL-X file holds shape then expression directions,
# and one with fewer than 300 (+100) is read as 10 shape (+10 expression) directions
_SHAPE_SPACE, _EXPRESSION_SPACE = 300, {"smpl": 0, "smplx": 100}
_CSR_KEYS = ("data", "indices", "indptr", "shape")


class FitError(ValueError):
    """Meshes or a model that cannot be fitted; the message names the file and the fix."""


@dataclass(frozen=True)
class FitConfig:
    num_betas: int = 10
    iterations: int = 20  # L-BFGS steps on all frames of a track at once (`mega-rt fit --iterations`)
    smooth_weight: float = 0.0  # weight of the squared vertex acceleration between consecutive frames
    rescue_ratio: float = 1.5  # a frame this much worse than the one before it restarts from that one
    device: str = "cpu"


class BodyModel:
    """The arrays of one SMPL-family model file, as tensors on one device, and its forward pass."""

    def __init__(self, path: str | Path, num_betas: int = 10, device: str = "cpu"):
        from train.data.smpl import SmplBody, SmplError, load_struct

        try:
            self.path = SmplBody(path)._file_for("neutral")  # a file, or a folder's SMPL_NEUTRAL
            struct = load_struct(self.path)
        except SmplError as e:
            raise FitError(str(e)) from None
        except ImportError:
            raise FitError(f"{path}: reading an SMPL model needs smplx (pip install 'mega-rt[smpl]')") from None

        def array(name):
            value = getattr(struct, name)
            value = (
                value.toarray() if hasattr(value, "toarray") else np.asarray(value)
            )  # the release stores some sparse
            return torch.as_tensor(np.asarray(value, np.float64), dtype=torch.float32, device=device)

        self.kind = "smplx" if hasattr(struct, "hands_componentsl") or hasattr(struct, "lmk_faces_idx") else "smpl"
        shapedirs = array("shapedirs")
        full = shapedirs.shape[-1] >= _SHAPE_SPACE + _EXPRESSION_SPACE[self.kind]
        shape_dirs = _SHAPE_SPACE if full else 10
        self.num_betas = min(num_betas, shape_dirs, shapedirs.shape[-1])
        self.v_template = array("v_template")
        self.shapedirs = shapedirs[..., : self.num_betas].contiguous()
        posedirs = array("posedirs")
        self.posedirs = posedirs.reshape(-1, posedirs.shape[-1]).T.contiguous()  # (P, V*3), smplx's layout
        self.J_regressor = array("J_regressor")
        self.weights = array("weights")
        self.parents = torch.as_tensor(np.asarray(struct.kintree_table)[0].astype(np.int64), device=device)
        self.parents[0] = -1  # the file's root parent is 2**32-1
        self.faces = np.asarray(struct.f, np.int64)
        self.num_joints = int(self.J_regressor.shape[0])
        self.num_body_joints = _BODY_JOINTS[self.kind]
        self.device = device
        if self.weights.shape != (self.v_template.shape[0], self.num_joints):
            raise FitError(f"{self.path}: skinning weights {tuple(self.weights.shape)} do not match the model")

    @property
    def num_verts(self) -> int:
        return int(self.v_template.shape[0])

    def vertex_owner(self) -> torch.Tensor:
        """(V,) the joint that carries each vertex most."""
        return self.weights.argmax(1)

    def forward(self, global_orient, body_pose, betas, transl):
        """(B,3), (B,3*num_body_joints), (B,K), (B,3) -> verts (B,V,3), joints (B,J,3), same frame as transl."""
        from smplx.lbs import lbs

        rest = body_pose.new_zeros(len(body_pose), 3 * (self.num_joints - 1 - self.num_body_joints))
        pose = torch.cat([global_orient, body_pose, rest], 1)
        verts, joints = lbs(
            betas, pose, self.v_template, self.shapedirs, self.posedirs, self.J_regressor, self.parents, self.weights
        )
        return verts + transl[:, None], joints + transl[:, None]

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """(B,K) -> (B,J,3): the joints of the shaped body at rest (zero pose, no translation)."""
        shaped = self.v_template + torch.einsum("bk,vck->bvc", betas, self.shapedirs)
        return torch.einsum("jv,bvc->bjc", self.J_regressor, shaped)

    def shaped_verts(self, betas: torch.Tensor) -> torch.Tensor:
        return self.v_template + torch.einsum("bk,vck->bvc", betas, self.shapedirs)


class VertexMap:
    """A linear map between the vertices of two topologies of one body: out = matrix @ in, with `rows`
    output and `cols` input vertices (smplx's deformation-transfer matrices). Held as each output vertex's
    few weighted inputs (a gather, which forward- and reverse-mode autograd both go through) or, when rows
    are dense, as a matrix."""

    _MAX_GATHER = 32  # inputs per output vertex up to which the gather beats a dense product

    def __init__(self, rows, cols, values, shape, path: Path, device: str = "cpu"):
        self.shape = (int(shape[0]), int(shape[1]))
        self.path = path
        counts = np.bincount(rows, minlength=self.shape[0])
        width = int(counts.max()) if len(rows) else 0
        if width <= self._MAX_GATHER:
            order = np.lexsort((cols, rows))
            rows, cols, values = rows[order], cols[order], values[order]
            slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
            index = np.zeros((self.shape[0], width), np.int64)
            weight = np.zeros((self.shape[0], width), np.float32)
            index[rows, slot], weight[rows, slot] = cols, values
            self.index = torch.as_tensor(index, device=device)
            self.weight = torch.as_tensor(weight, device=device)
            self.matrix = None
        else:
            matrix = np.zeros(self.shape, np.float32)
            np.add.at(matrix, (rows, cols), values)
            self.matrix = torch.as_tensor(matrix, device=device)

    def __call__(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, cols, C) -> (B, rows, C)."""
        if self.matrix is not None:
            return torch.einsum("oi,bic->boc", self.matrix, verts)
        return torch.einsum("bokc,ok->boc", verts[:, self.index], self.weight)


def _csr_triplets(path: Path, data, indices, indptr, shape):
    """Checked CSR arrays -> (rows, cols, values, shape)."""
    shape = tuple(int(n) for n in np.asarray(shape).reshape(-1))
    data, indices, indptr = np.asarray(data), np.asarray(indices), np.asarray(indptr)
    if len(shape) != 2 or min(shape) < 1 or indptr.shape != (shape[0] + 1,) or indices.shape != data.shape:
        raise FitError(f"{path}: not a CSR matrix (indptr needs shape[0]+1 entries, indices one per value)")
    if indptr[0] != 0 or indptr[-1] != len(data) or (np.diff(indptr) < 0).any():
        raise FitError(f"{path}: CSR indptr must rise from 0 to the number of values")
    if len(indices) and (indices.min() < 0 or indices.max() >= shape[1]):
        raise FitError(f"{path}: CSR column indices outside the {shape[1]} columns")
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    return rows, indices.astype(np.int64), data, shape


def _dense_triplets(path: Path, matrix):
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.dtype.kind not in "fiu":
        raise FitError(f"{path}: the correspondence must be a 2-D numeric matrix, not {matrix.dtype} {matrix.shape}")
    rows, cols = np.nonzero(matrix)
    return rows, cols, matrix[rows, cols], matrix.shape


def _matrix_triplets(path: Path, matrix):
    if hasattr(matrix, "tocsr"):  # a scipy sparse matrix (smplx's .pkl files)
        m = matrix.tocsr()
        return _csr_triplets(path, m.data, m.indices, m.indptr, m.shape)
    return _dense_triplets(path, matrix)


def load_correspondence(path: str | Path, device: str = "cpu") -> VertexMap:
    """A vertex map from an .npz (a dense `matrix`, or CSR `data`, `indices`, `indptr`, `shape`) or an
    smplx deformation-transfer .pkl (`mtx`, whose second half of columns acts on normals and is dropped,
    as smplx does without normals; or a dense `matrix`). Nothing in the file runs."""
    path = Path(path)
    if not path.is_file():
        raise FitError(f"{path}: correspondence file not found (an .npz matrix or smplx's *_deftrafo_setup.pkl)")
    what = "a dense `matrix` or a CSR matrix (`data`, `indices`, `indptr`, `shape`)"
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if all(k in z.files for k in _CSR_KEYS):
                    triplets = _csr_triplets(path, *(z[k] for k in _CSR_KEYS))
                elif "matrix" in z.files:
                    triplets = _dense_triplets(path, z["matrix"])
                else:
                    raise FitError(f"{path}: holds {', '.join(z.files) or 'nothing'}; a correspondence needs {what}")
        except (OSError, ValueError) as e:
            if isinstance(e, FitError):
                raise
            raise FitError(f"{path}: not a readable .npz ({e})") from None
    elif path.suffix.lower() == ".pkl":
        from train.safe_pickle import UnsafePickle, load_data_pickle

        try:
            data = load_data_pickle(path)
        except UnsafePickle as e:
            raise FitError(str(e)) from None
        if not isinstance(data, dict) or not ({"mtx", "matrix"} & set(data)):
            raise FitError(f"{path}: not a deformation-transfer file (a dict with `mtx` or `matrix`)")
        if "mtx" in data:
            rows, cols, values, shape = _matrix_triplets(path, data["mtx"])
            if shape[1] % 2:
                raise FitError(f"{path}: `mtx` has {shape[1]} columns; smplx's layout is vertices then normals")
            keep = cols < shape[1] // 2
            triplets = rows[keep], cols[keep], values[keep], (shape[0], shape[1] // 2)
        else:
            triplets = _matrix_triplets(path, data["matrix"])
    else:
        raise FitError(f"{path}: a correspondence must be an .npz ({what}) or smplx's *_deftrafo_setup.pkl")
    rows, cols, values, shape = triplets
    values = np.asarray(values, np.float64)
    if not np.isfinite(values).all():
        raise FitError(f"{path}: the correspondence holds values that are not finite")
    empty = shape[0] - len(np.unique(rows[values != 0]))
    if empty:
        raise FitError(f"{path}: {empty} of the {shape[0]} output vertices map from nothing (rows without a weight)")
    return VertexMap(rows, cols, values, shape, path, device)


class MappedBody:
    """A body model seen through a vertex map: its posed and rest meshes in the map's output topology
    (SMPL-X posed, then mapped to SMPL), for the fit to compare with meshes of that topology."""

    def __init__(self, model: BodyModel, to_meshes: VertexMap):
        self.model, self.to_meshes = model, to_meshes
        self.device, self.num_betas, self.parents = model.device, model.num_betas, model.parents
        self.num_joints, self.num_body_joints = model.num_joints, model.num_body_joints

    @property
    def num_verts(self) -> int:
        return self.to_meshes.shape[0]

    def vertex_owner(self) -> torch.Tensor:
        return self.to_meshes(self.model.weights[None])[0].argmax(1)

    def forward(self, global_orient, body_pose, betas, transl):
        verts, joints = self.model.forward(global_orient, body_pose, betas, transl)
        return self.to_meshes(verts), joints

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        return self.model.rest_joints(betas)

    def shaped_verts(self, betas: torch.Tensor) -> torch.Tensor:
        return self.to_meshes(self.model.shaped_verts(betas))


def fit_topology(model: BodyModel, mesh_verts: int, correspondence: VertexMap | None, meshes: str | Path):
    """What the fit compares, for meshes of `mesh_verts` vertices: (body, to_model) where `body` gives meshes
    of the fitted topology and `to_model` (or None) maps the meshes into it. A one-line FitError when the
    model, the meshes and the correspondence do not fit together."""
    if correspondence is None:
        if model.num_verts == mesh_verts:
            return model, None
        if model.kind == "smplx":
            raise FitError(
                f"{meshes}: meshes have {mesh_verts} vertices, the SMPL-X model {model.path} {model.num_verts}; "
                "give --correspondence FILE mapping between them (smplx's smpl2smplx_deftrafo_setup.pkl "
                "or smplx2smpl_deftrafo_setup.pkl, or an .npz matrix)"
            )
        raise FitError(
            f"{meshes}: meshes have {mesh_verts} vertices, the {model.kind.upper()} model {model.path} "
            f"{model.num_verts}; give a model of the meshes' topology (SMPL for mega-rt results)"
        )
    if model.num_verts == mesh_verts:
        raise FitError(
            f"{correspondence.path}: the model {model.path} and the meshes share one topology "
            f"({mesh_verts} vertices); drop --correspondence"
        )
    if correspondence.shape == (model.num_verts, mesh_verts):
        return model, correspondence
    if correspondence.shape == (mesh_verts, model.num_verts):
        return MappedBody(model, correspondence), None
    raise FitError(
        f"{correspondence.path}: a {correspondence.shape[0]} x {correspondence.shape[1]} matrix; the meshes have "
        f"{mesh_verts} vertices and the model {model.num_verts}, so it must be {model.num_verts} x {mesh_verts} "
        f"(meshes to model) or {mesh_verts} x {model.num_verts} (model to meshes)"
    )


def matrix_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """(...,3,3) rotations -> (...,3) axis-angle, through the quaternion (stable at 0 and near pi)."""
    m = rotmat
    diag = torch.stack([m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    trace = diag.sum(-1)
    # four candidate quaternions (w, x, y, z), each well conditioned where its largest component is big
    q = torch.stack(
        [
            torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + 2 * diag[..., 0] - trace, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 + 2 * diag[..., 1] - trace, m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 + 2 * diag[..., 2] - trace], -1),
        ],
        -2,
    )  # fmt: skip
    pick = torch.stack(
        [1 + trace, 1 + 2 * diag[..., 0] - trace, 1 + 2 * diag[..., 1] - trace, 1 + 2 * diag[..., 2] - trace], -1
    )
    best = pick.argmax(-1)
    quat = torch.gather(q, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    sin_half = quat[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, quat[..., :1])
    return quat[..., 1:] * torch.where(sin_half > 1e-8, angle / sin_half.clamp(min=1e-12), torch.full_like(angle, 2.0))


def _kabsch(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation R (B,3,3) and translation t (B,3) with R @ src + t ~ dst, src (N,3) and dst (B,N,3)."""
    mu_s, mu_d = src.mean(0), dst.mean(1)
    k = (dst - mu_d[:, None]).transpose(1, 2) @ (src - mu_s)  # (B,3,3)
    u, _, vh = torch.linalg.svd(k)
    d = torch.sign(torch.linalg.det(u @ vh))
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = u @ fix @ vh
    return rot, mu_d - (rot @ mu_s[:, None])[..., 0]


def _part_rotations(
    model: BodyModel | MappedBody, rest: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form start: each joint's global rotation by Kabsch on the vertices it carries most (they move
    almost rigidly with it), then local = parent^T @ global. rest (V,3): the shaped body at rest.
    -> global_orient (T,3), body_pose (T,3*nb)."""
    owner = model.vertex_owner()
    count = len(target)
    eye = torch.eye(3, device=target.device).expand(count, 3, 3)
    glob = []
    for k in range(model.num_joints):
        part = owner == k
        if k <= model.num_body_joints and int(part.sum()) >= 4:
            rot, _ = _kabsch(rest[part], target[:, part])
        else:  # too few vertices (or a joint the fit keeps at rest): it turns with its parent
            rot = glob[int(model.parents[k])] if k else eye
        glob.append(rot)
    local = [glob[0]] + [
        glob[int(model.parents[k])].transpose(1, 2) @ glob[k] for k in range(1, model.num_body_joints + 1)
    ]
    aa = matrix_to_axis_angle(torch.stack(local, 1))  # (T, 1+nb, 3)
    return aa[:, 0], aa[:, 1:].reshape(count, -1)


def _segments(frames: np.ndarray) -> list[np.ndarray]:
    """Indices of runs of consecutive frame numbers (the smoothness term spans only those)."""
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    return np.split(np.arange(len(frames)), breaks)


class _Params(torch.nn.Module):
    def __init__(self, orient, pose, transl, betas):
        super().__init__()
        self.orient = torch.nn.Parameter(orient.clone())
        self.pose = torch.nn.Parameter(pose.clone())
        self.transl = torch.nn.Parameter(transl.clone())
        self.betas = torch.nn.Parameter(betas.clone())


def _optimise(model: BodyModel | MappedBody, target, params: _Params, frames, cfg: FitConfig, fit_betas: bool = True):
    """L-BFGS on the summed per-frame mean squared vertex error (+ smoothness); returns per-frame error (m)."""
    group = [params.orient, params.pose, params.transl] + ([params.betas] if fit_betas else [])
    opt = torch.optim.LBFGS(group, lr=1, max_iter=cfg.iterations, history_size=50, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)  # fmt: skip
    triples = [s for s in _segments(frames) if len(s) >= 3]
    mid = torch.as_tensor(np.concatenate([s[1:-1] for s in triples]) if triples else np.zeros(0, np.int64))

    def closure():
        opt.zero_grad()
        verts, _ = model.forward(params.orient, params.pose, params.betas.expand(len(target), -1), params.transl)
        loss = ((verts - target) ** 2).sum(-1).mean(-1).sum()
        if cfg.smooth_weight > 0 and len(mid):
            accel = verts[mid + 1] - 2 * verts[mid] + verts[mid - 1]
            loss = loss + cfg.smooth_weight * (accel**2).sum(-1).mean(-1).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        verts, _ = model.forward(params.orient, params.pose, params.betas.expand(len(target), -1), params.transl)
        return (verts - target).norm(dim=-1).mean(-1)


def _rigid_start(model: BodyModel | MappedBody, target: torch.Tensor, betas: torch.Tensor):
    """(orient, pose, transl, betas) of the closed-form start for the body of shape `betas` (1,K)."""
    rest = model.shaped_verts(betas)[0]
    orient, pose = _part_rotations(model, rest, target)
    j0 = model.rest_joints(betas)[0, 0]
    root = model.vertex_owner() == 0
    rot = axis_angle_to_matrix(orient)
    t = target[:, root].mean(1) - (rot @ rest[root].mean(0)[:, None])[..., 0]
    # lbs rotates the body about its root joint: v = R (x - j0) + j0 + transl
    return orient, pose, t + (rot @ j0[:, None])[..., 0] - j0, betas


def _solve_shape(model: BodyModel | MappedBody, target: torch.Tensor, params: _Params, chunk: int = 64) -> None:
    """For fixed joint rotations the posed vertices are linear in betas and translation (the joints are
    linear in the shaped rest vertices): one least-squares solve of the shared betas over every frame,
    then each frame's translation. Updates `params` in place."""
    from torch.func import jacfwd

    k = model.num_betas
    normal = target.new_zeros(k, k)
    rhs = target.new_zeros(k)
    jacobians, residuals = [], []
    with torch.no_grad():
        for lo in range(0, len(target), chunk):
            rows = slice(lo, lo + chunk)
            o, p, t = params.orient[rows], params.pose[rows], params.transl[rows]

            def posed(b, o=o, p=p, t=t):
                return model.forward(o, p, b.expand(len(o), -1), t)[0]

            b = params.betas[0]
            jac = jacfwd(posed)(b)  # (n,V,3,K): exact, the map is linear
            res = target[rows] - posed(b)
            jac_c = jac - jac.mean(1, keepdim=True)  # the translation absorbs each frame's mean
            res_c = res - res.mean(1, keepdim=True)
            normal += torch.einsum("nvck,nvcl->kl", jac_c, jac_c)
            rhs += torch.einsum("nvck,nvc->k", jac_c, res_c)
            jacobians.append(jac.mean(1))
            residuals.append(res.mean(1))
        damping = 1e-6 * normal.diagonal().mean().clamp(min=1e-12)
        delta = torch.linalg.solve(normal + damping * torch.eye(k, device=normal.device), rhs)
        params.betas += delta
        params.transl += torch.cat(residuals) - torch.einsum("nck,k->nc", torch.cat(jacobians), delta)


def fit_track(model: BodyModel | MappedBody, verts_cam: torch.Tensor, frames: np.ndarray, cfg: FitConfig) -> dict:
    """Fit one track: verts_cam (T,V,3) in the camera frame (m), frames (T,) increasing. Returns tensors
    global_orient (T,3), body_pose (T,3*nb), transl (T,3), betas (K,), error (T,) mean vertex distance (m)."""
    target = verts_cam.to(model.device, torch.float32)
    params = _Params(*_rigid_start(model, target, target.new_zeros(1, model.num_betas)))
    _solve_shape(model, target, params)
    params = _Params(*_rigid_start(model, target, params.betas.detach()))  # again, on the shaped body
    for _ in range(2):
        _solve_shape(model, target, params)
        error = _optimise(model, target, params, frames, cfg, fit_betas=False)
    # warm start frame to frame: a frame far worse than its predecessor restarts from the predecessor's pose
    for _ in range(3):
        prev = torch.cat([error[:1], error[:-1]])
        worse = torch.nonzero((error > cfg.rescue_ratio * prev) & (error > 1e-3)).flatten()
        worse = worse[worse > 0]
        if not len(worse):
            break
        src = worse - 1
        retry = _Params(
            params.orient[src].detach(), params.pose[src].detach(), params.transl[src].detach(), params.betas.detach()
        )
        retry_error = _optimise(model, target[worse], retry, frames[worse.cpu().numpy()], cfg, fit_betas=False)
        better = retry_error < error[worse]
        if not better.any():
            break
        rows = worse[better]
        with torch.no_grad():
            params.orient[rows] = retry.orient[better]
            params.pose[rows] = retry.pose[better]
            params.transl[rows] = retry.transl[better]
        error[rows] = retry_error[better]
    return {
        "global_orient": params.orient.detach(),
        "body_pose": params.pose.detach(),
        "transl": params.transl.detach(),
        "betas": params.betas.detach()[0],
        "error": error.detach(),
    }


def smpl_results_name(results: str | Path) -> Path:
    """Where `mega-rt fit` writes: beside the results, `<stem>_smpl.npz`."""
    results = Path(results)
    return results.with_name(f"{results.stem}_smpl.npz")


def fit_results(
    results_path: str | Path, model: BodyModel, cfg: FitConfig, tracks=None, log=None, correspondence=None
) -> dict:
    """Fit every track (or those in `tracks`) of a `mega-rt video` results file -> the *_smpl.npz arrays.
    `correspondence`: a VertexMap between the meshes' and the model's topologies where they differ."""
    res = read_results(results_path)
    body, to_model = fit_topology(model, res.num_verts, correspondence, results_path)
    chosen = res.track_ids() if tracks is None else [t for t in res.track_ids() if t in set(tracks)]
    if tracks is not None and not chosen:
        raise FitError(f"{results_path}: no track {', '.join(map(str, tracks))} (tracks: {res.track_ids()})")
    rows_all, out = [], {k: [] for k in ("global_orient", "body_pose", "transl", "error", "joints")}
    track_betas, start = [], time.perf_counter()
    for track in chosen:
        rows = res.rows_of(track)
        verts = torch.from_numpy(res.verts(rows)).to(model.device, torch.float32)
        fit = fit_track(body, to_model(verts) if to_model else verts, res.frame[rows], cfg)
        with torch.no_grad():
            _, joints = model.forward(
                fit["global_orient"], fit["body_pose"], fit["betas"].expand(len(rows), -1), fit["transl"]
            )
        for k in ("global_orient", "body_pose", "transl", "error"):
            out[k].append(fit[k].cpu().numpy())
        out["joints"].append(joints.cpu().numpy())
        track_betas.append(fit["betas"].cpu().numpy())
        rows_all.append(rows)
        if log:
            err = fit["error"].cpu().numpy()
            log(
                f"track {track}: {len(rows)} meshes, mean vertex error {1000 * err.mean():.2f} mm (max {1000 * err.max():.2f})"
            )
    seconds = time.perf_counter() - start
    rows = np.concatenate(rows_all) if rows_all else np.zeros(0, np.int64)
    nb = 3 * model.num_body_joints
    empty = {
        "global_orient": (0, 3),
        "body_pose": (0, nb),
        "transl": (0, 3),
        "error": (0,),
        "joints": (0, model.num_joints, 3),
    }
    cat = {k: np.concatenate(v).astype(np.float32) if v else np.zeros(empty[k], np.float32) for k, v in out.items()}
    betas = np.stack(track_betas).astype(np.float32) if track_betas else np.zeros((0, model.num_betas), np.float32)
    with torch.no_grad():
        b = torch.from_numpy(betas).to(model.device)
        rest_joints = model.rest_joints(b).cpu().numpy().astype(np.float32)
        rest_verts = model.shaped_verts(b).cpu().numpy().astype(np.float32)
    track_of_row = res.track_id[rows]
    return {
        "schema": np.array(SCHEMA),
        "model_type": np.array(model.kind),
        "model_file": np.array(str(model.path)),
        "results_file": np.array(str(results_path)),
        "correspondence_file": np.array(str(correspondence.path) if correspondence else ""),
        "row": rows.astype(np.int64),
        "frame": res.frame[rows].astype(np.int32),
        "track_id": track_of_row.astype(np.int64),
        "global_orient": cat["global_orient"],
        "body_pose": cat["body_pose"],
        "transl": cat["transl"],
        "betas": betas[np.searchsorted(np.asarray(chosen), track_of_row)] if len(rows) else np.zeros((0, model.num_betas), np.float32),
        "joints": cat["joints"],
        "fit_error": cat["error"],
        "tracks": np.asarray(chosen, np.int64),
        "track_betas": betas,
        "rest_joints": rest_joints,
        "rest_verts": rest_verts,
        "parents": model.parents.cpu().numpy().astype(np.int32),
        "skin_weights": model.weights.cpu().numpy().astype(np.float32),
        "faces": model.faces.astype(np.int32),
        "fps": np.float32(res.fps),
        "fit_seconds": np.float32(seconds),
    }  # fmt: skip


def write_smpl_npz(path: str | Path, arrays: dict) -> Path:
    """Atomically: a temporary name, read back and checked, then renamed."""
    from train.io import atomic_write

    def verify(tmp: Path):
        with np.load(tmp, allow_pickle=False) as z:
            if str(z["schema"]) != SCHEMA or z["global_orient"].shape != arrays["global_orient"].shape:
                raise OSError(f"{path}: the written file does not read back")

    with atomic_write(path, verify) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return Path(path)
