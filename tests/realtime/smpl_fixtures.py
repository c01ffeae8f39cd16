"""SMPL- and SMPL-X-format model files, the vertex maps between the two topologies, meshes posed from
known parameters, and a results file holding them (the layout of docs/results-format.md). Not
collected: no test_ prefix."""

from __future__ import annotations

import numpy as np
import torch

from tests.train.fixtures import write_smpl_model
from train.data.joints import synthetic_joint_regressor
from train.geometry import axis_angle_to_matrix
from train.synthetic import body as body_lib

FPS = 25.0
# smplx's SMPL-X kinematic tree: 22 body joints (SMPL's first 22), jaw and eyes on the head, then 3-joint
# chains of the left fingers on the left wrist (20) and of the right fingers on the right wrist (21)
SMPLX_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15) + sum(
    ((wrist, first, first + 1) for wrist, start in ((20, 25), (21, 40)) for first in range(start, start + 15, 3)), ()
)
SMPLX_VERTS = 10475
LEFT_MIDDLE1, RIGHT_MIDDLE1 = 28, 43  # carry what SMPL's hand joints (22, 23) carry


def smpl_model_file(folder, assets_dir):
    rig = body_lib.load_rig(assets_dir)
    return write_smpl_model(folder / "SMPL_NEUTRAL.pkl", rig, synthetic_joint_regressor(assets_dir))


def known_motion(model, frames: int, seed: int):
    """Parameters of a person walking in front of the camera (upright: a half turn about x) and its meshes."""
    from realtime.fit_smpl import matrix_to_axis_angle

    g = torch.Generator().manual_seed(seed)
    dims = 3 * model.num_body_joints
    pose = 0.3 * torch.randn(1, dims, generator=g) + 0.04 * torch.randn(frames, dims, generator=g).cumsum(0)
    upright = axis_angle_to_matrix(torch.tensor([[np.pi, 0.0, 0.0]]))
    orient = matrix_to_axis_angle(upright @ axis_angle_to_matrix(0.25 * torch.randn(frames, 3, generator=g)))
    transl = torch.tensor([0.3 * seed - 0.3, 0.2, 4.0]) + 0.03 * torch.randn(frames, 3, generator=g).cumsum(0)
    betas = torch.randn(1, model.num_betas, generator=g)
    with torch.no_grad():
        verts, joints = model.forward(orient, pose, betas.expand(frames, -1), transl)
    return dict(global_orient=orient, body_pose=pose, transl=transl, betas=betas[0], verts=verts, joints=joints)


def write_results(path, verts, frame, track_id, faces, fps=FPS, vertex_std=None):
    verts = np.asarray(verts, np.float32)
    arrays = dict(
        schema=np.array("mega-rt-results/1"), frame=np.asarray(frame, np.int32), track_id=np.asarray(track_id, np.int64),
        verts=verts.astype(np.float16), faces=np.asarray(faces, np.int32), fps=np.float32(fps),
        image_size_wh=np.array([640, 480], np.int32), focal=np.float32(1000 / 224 * 640), samples=np.int32(1 if vertex_std is None else 8),
    )  # fmt: skip
    if vertex_std is not None:
        arrays["vertex_std"] = np.asarray(vertex_std, np.float16)
    np.savez(path, **arrays)
    return path


def _split_edges(faces: np.ndarray, count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """`count` edges, no two on one triangle, each split at its midpoint: (edges (count,2), new faces)."""
    num_verts = int(faces.max()) + 1
    sides = np.stack([faces, np.roll(faces, -1, 1)], -1).reshape(-1, 2)  # (3F,2): face f's edge k at 3f+k
    keys = np.sort(sides, 1) @ np.array([num_verts, 1])
    taken = np.zeros(len(faces), bool)
    chosen = []
    order = np.argsort(keys, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(keys[order])) + 1)
    for g in rng.permutation(len(groups)):
        owners = groups[g] // 3
        if not taken[owners].any():
            taken[owners] = True
            chosen.append(groups[g])
            if len(chosen) == count:
                break
    assert len(chosen) == count, "the mesh has too few independent edges"
    edges = np.stack([np.sort(sides[c[0]]) for c in chosen])
    new_faces = [faces[~taken]]
    for j, c in enumerate(chosen):
        mid = num_verts + j
        for side in c:
            f, k = divmod(int(side), 3)
            x, y, z = np.roll(faces[f], -k)  # the split edge first: x -> y
            new_faces.append(np.array([[x, mid, z], [mid, y, z]]))
    return edges, np.concatenate(new_faces)


def smplx_model_file(folder, assets_dir):
    """An SMPL-X-format model, SMPLX_NEUTRAL.npz with the keys smplx's SMPLX reads, built from the synthetic
    SMPL rig: its 6890 vertices and a midpoint on each of 3585 split edges (10475 vertices, SMPL-X's
    count), shuffled; 55 joints, the body's as in SMPL, the jaw, eyes and fingers carrying nothing but the
    two middle fingers' roots, which carry SMPL's hands. -> (path, maps) with the exact vertex maps as
    (rows, cols, values, shape): maps["smplx_to_smpl"] (6890 x 10475), maps["smpl_to_smplx"] (10475 x 6890)."""
    rig = body_lib.load_rig(assets_dir)
    regressor = synthetic_joint_regressor(assets_dir).double().numpy()
    rng = np.random.default_rng(0)
    n = len(rig.verts_template)
    edges, faces = _split_edges(rig.faces.astype(np.int64), SMPLX_VERTS - n, rng)
    perm = rng.permutation(SMPLX_VERTS)  # SMPL-X vertex s is vertex perm[s] of (SMPL's, then midpoints)
    new_index = np.argsort(perm)

    def with_midpoints(a):
        return np.concatenate([a, 0.5 * (a[edges[:, 0]] + a[edges[:, 1]])])[perm]

    verts = with_midpoints(rig.verts_template.astype(np.float64))
    smpl_weights = with_midpoints(rig.skin_weights.astype(np.float64))
    weights = np.zeros((SMPLX_VERTS, len(SMPLX_PARENTS)))
    weights[:, :22] = smpl_weights[:, :22]
    weights[:, LEFT_MIDDLE1], weights[:, RIGHT_MIDDLE1] = smpl_weights[:, 22], smpl_weights[:, 23]
    source = np.r_[np.arange(22), [15, 15, 15], [22] * 15, [23] * 15]  # the SMPL joint each one sits at
    j_regressor = np.zeros((len(SMPLX_PARENTS), SMPLX_VERTS))
    j_regressor[:, new_index[:n]] = regressor[source]
    smpl_shape = np.zeros((n, 3, 10))
    smpl_shape[:, 1, 0] = 0.05 * (rig.verts_template[:, 1] - rig.verts_template[:, 1].mean())  # beta 0: taller
    smpl_shape[:, :, 1:] = 0.002 * rng.standard_normal((n, 3, 9))
    shapedirs = np.concatenate(  # 10 shape then 10 expression directions, as smplx reads a 20-column file
        [with_midpoints(smpl_shape), 0.001 * rng.standard_normal((SMPLX_VERTS, 3, 10))], -1
    )
    parents = np.array(SMPLX_PARENTS, np.int64)
    arrays = dict(
        v_template=verts, shapedirs=shapedirs, posedirs=np.zeros((SMPLX_VERTS, 3, 9 * 54), np.float32),
        J_regressor=j_regressor, weights=weights, f=new_index[faces],
        kintree_table=np.stack([np.where(parents < 0, 4294967295, parents), np.arange(len(parents))]),
        hands_componentsl=np.eye(45), hands_componentsr=np.eye(45), hands_meanl=np.zeros(45), hands_meanr=np.zeros(45),
        lmk_faces_idx=np.arange(51), lmk_bary_coords=np.full((51, 3), 1 / 3),
        dynamic_lmk_faces_idx=np.zeros((79, 17), np.int64), dynamic_lmk_bary_coords=np.full((79, 17, 3), 1 / 3),
        joint2num=np.array({"pelvis": 0}, dtype=object),  # the release's .npz holds such pickled extras
    )  # fmt: skip
    path = folder / "SMPLX_NEUTRAL.npz"
    np.savez(path, **arrays)
    combined = perm  # SMPL-X vertex s -> its row in (SMPL's, then midpoints)
    is_mid = combined >= n
    ends = edges[np.where(is_mid, combined - n, 0)]
    to_smplx_rows = np.r_[np.flatnonzero(~is_mid), np.repeat(np.flatnonzero(is_mid), 2)]
    to_smplx_cols = np.r_[combined[~is_mid], ends[is_mid].reshape(-1)]
    to_smplx_vals = np.r_[np.ones((~is_mid).sum()), np.full(2 * is_mid.sum(), 0.5)]
    maps = {
        "smplx_to_smpl": (np.arange(n), new_index[:n], np.ones(n), (n, SMPLX_VERTS)),
        "smpl_to_smplx": (to_smplx_rows, to_smplx_cols, to_smplx_vals, (SMPLX_VERTS, n)),
    }
    return path, maps


def write_csr_npz(path, triplets):
    """The map as CSR arrays (data, indices, indptr, shape), the layout of scipy.sparse.csr_matrix."""
    rows, cols, values, shape = triplets
    order = np.lexsort((cols, rows))
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=shape[0]))]
    np.savez(path, data=values[order], indices=cols[order], indptr=indptr, shape=np.array(shape))
    return path
