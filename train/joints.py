"""Optional joints from a user-supplied regressor: joints = J_regressor @ vertices.

MEGA predicts vertices only. Users who want joints bring a regressor (licensed SMPL files are never
shipped): a `.npy` (J, 6890) array, an `.npz` holding `J_regressor` (e.g. the H36M 17-joint regressor),
an SMPL model file (`.pkl`, read through smplx; or an `.npz` export, whose `J_regressor` is used).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

NUM_VERTS = 6890


class RegressorError(ValueError):
    """A joint regressor file that cannot be used; the message names the file."""


def _from_smpl_model(path: Path) -> np.ndarray:
    """The J_regressor of an SMPL model .pkl, read without running code from the file (train.safe_pickle)."""
    from train.data.smpl import SmplError, load_struct

    try:
        reg = load_struct(path).J_regressor
    except ImportError:
        raise RegressorError(f"{path}: reading an SMPL model file needs smplx (pip install 'mega-rt[smpl]')") from None
    except SmplError as e:
        raise RegressorError(str(e)) from None
    return reg.toarray() if hasattr(reg, "toarray") else np.asarray(reg)  # the SMPL release stores it sparse


def load_joint_regressor(path: str | Path) -> torch.Tensor:
    """(J, 6890) float32 regressor from a .npy, .npz or SMPL model file."""
    path = Path(path)
    if not path.is_file():
        raise RegressorError(f"{path}: joint regressor not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            reg = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = set(z.files)
                if "J_regressor" in keys:  # a regressor file, or an SMPL-family model saved as .npz
                    reg = z["J_regressor"]
                elif len(keys) == 1:
                    reg = z[next(iter(keys))]
                else:
                    raise RegressorError(f"{path}: expected a 'J_regressor' array, found {sorted(keys)}")
        elif suffix == ".pkl":
            reg = _from_smpl_model(path)
        else:
            raise RegressorError(f"{path}: unsupported regressor file type {suffix!r} (use .npy, .npz or an SMPL .pkl)")
    except (OSError, ValueError) as e:
        if isinstance(e, RegressorError):
            raise
        raise RegressorError(f"{path}: unreadable ({str(e)[:120]})") from None
    reg = np.asarray(reg, dtype=np.float32)
    if reg.ndim != 2 or reg.shape[1] != NUM_VERTS:
        raise RegressorError(f"{path}: regressor shape {reg.shape}, expected (J, {NUM_VERTS})")
    if not np.isfinite(reg).all():
        raise RegressorError(f"{path}: regressor contains NaN or inf")
    return torch.from_numpy(reg)


def regress_joints(verts: torch.Tensor, regressor: torch.Tensor) -> torch.Tensor:
    """(B,6890,3) vertices -> (B,J,3) joints."""
    return torch.einsum("jv,bvc->bjc", regressor.to(verts), verts)
