"""SMPL parameters from meshes: per track, global orientation, body pose, translation per frame and one
shape vector, fitted to the mesh vertices (known correspondence) in the camera frame.

The body is smplx's linear blend skinning (`smplx.lbs.lbs`) on the arrays of an SMPL or SMPL-X model file,
read without running code from it (train.data.smpl.load_struct). Every frame of a track is one row of a
batch: a closed-form start (each joint's rotation by Kabsch on the vertices it carries), then L-BFGS on all frames together; a frame left
worse than the one before it starts again from that frame's solution (warm start, frame to frame).
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


class FitError(ValueError):
    """Meshes or a model that cannot be fitted; the message names the file and the fix."""


@dataclass(frozen=True)
class FitConfig:
    num_betas: int = 10
    iterations: int = 40  # L-BFGS steps on all frames of a track at once
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
        self.num_betas = min(num_betas, shapedirs.shape[-1])
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


def _part_rotations(model: BodyModel, rest: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form start: each joint's global rotation by Kabsch on the vertices it carries most (they move
    almost rigidly with it), then local = parent^T @ global. rest (V,3): the shaped body at rest.
    -> global_orient (T,3), body_pose (T,3*nb)."""
    owner = model.weights.argmax(1)
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


def _optimise(model: BodyModel, target, params: _Params, frames, cfg: FitConfig, fit_betas: bool = True):
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


def _rigid_start(model: BodyModel, target: torch.Tensor, betas: torch.Tensor):
    """(orient, pose, transl, betas) of the closed-form start for the body of shape `betas` (1,K)."""
    rest = model.shaped_verts(betas)[0]
    orient, pose = _part_rotations(model, rest, target)
    j0 = model.rest_joints(betas)[0, 0]
    root = model.weights.argmax(1) == 0
    rot = axis_angle_to_matrix(orient)
    t = target[:, root].mean(1) - (rot @ rest[root].mean(0)[:, None])[..., 0]
    # lbs rotates the body about its root joint: v = R (x - j0) + j0 + transl
    return orient, pose, t + (rot @ j0[:, None])[..., 0] - j0, betas


def _solve_shape(model: BodyModel, target: torch.Tensor, params: _Params, chunk: int = 64) -> None:
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


def fit_track(model: BodyModel, verts_cam: torch.Tensor, frames: np.ndarray, cfg: FitConfig) -> dict:
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


def fit_results(results_path: str | Path, model: BodyModel, cfg: FitConfig, tracks=None, log=None) -> dict:
    """Fit every track (or those in `tracks`) of a `mega-rt video` results file -> the *_smpl.npz arrays."""
    res = read_results(results_path)
    if res.num_verts != model.num_verts:
        raise FitError(
            f"{results_path}: meshes have {res.num_verts} vertices, the {model.kind.upper()} model {model.path} "
            f"{model.num_verts}; give a model of the meshes' topology (SMPL for mega-rt results)"
        )
    chosen = res.track_ids() if tracks is None else [t for t in res.track_ids() if t in set(tracks)]
    if tracks is not None and not chosen:
        raise FitError(f"{results_path}: no track {', '.join(map(str, tracks))} (tracks: {res.track_ids()})")
    rows_all, out = [], {k: [] for k in ("global_orient", "body_pose", "transl", "error", "joints")}
    track_betas, start = [], time.perf_counter()
    for track in chosen:
        rows = res.rows_of(track)
        verts = torch.from_numpy(res.verts(rows))
        fit = fit_track(model, verts, res.frame[rows], cfg)
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
