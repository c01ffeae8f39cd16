"""SMPL model .pkl files and other pickled data are read without running code from them."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from train.data.smpl import SmplError, load_struct
from train.joints import RegressorError, load_joint_regressor
from train.safe_pickle import UnsafePickle, load_data_pickle


class _Payload:
    """What a crafted file does: loading it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write(path, obj, protocol=2):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


def test_plain_arrays_load_as_written(tmp_path):
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "f": np.array([[0, 1, 2]], np.uint32), "n": 3, "s": "x"}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        got = load_data_pickle(_write(tmp_path / f"d{protocol}.pkl", data, protocol))
        assert got.keys() == data.keys() and got["n"] == 3 and got["s"] == "x"
        np.testing.assert_array_equal(got["a"], data["a"])
        assert got["f"].dtype == np.uint32


def test_a_pickle_that_runs_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    evil = _write(tmp_path / "SMPL_NEUTRAL.pkl", {"v_template": _Payload(marker)})
    with pytest.raises(UnsafePickle, match="refused: the pickle asks to run 'posix.system'"):
        load_data_pickle(evil)
    with pytest.raises(SmplError, match="SMPL_NEUTRAL.pkl: refused"):
        load_struct(evil)
    with pytest.raises(RegressorError, match="SMPL_NEUTRAL.pkl: refused"):
        load_joint_regressor(evil)
    assert not marker.exists()


def test_chumpy_smpl_files_get_the_conversion_hint(tmp_path):
    # a stand-in class under chumpy's module name, as the original SMPL release pickles its arrays
    body = b"\x80\x02}q\x00X\x01\x00\x00\x00xq\x01cchumpy.ch\nCh\nq\x02)\x81q\x03s."
    path = tmp_path / "basicModel_neutral.pkl"
    path.write_bytes(body)
    with pytest.raises(UnsafePickle, match="chumpy objects; use a chumpy-free SMPL file"):
        load_data_pickle(path)


def test_an_smpl_pkl_with_plain_arrays_gives_its_joint_regressor(tmp_path):
    pytest.importorskip("smplx")
    rng = np.random.default_rng(0)
    reg = rng.random((24, 6890)).astype(np.float32)
    model = {k: np.zeros(1) for k in ("v_template", "shapedirs", "posedirs", "weights", "kintree_table", "f")}
    model["J_regressor"] = reg
    got = load_joint_regressor(_write(tmp_path / "SMPL_NEUTRAL.pkl", model))
    np.testing.assert_array_equal(got.numpy(), reg)


def test_a_truncated_pickle_is_one_clear_error(tmp_path):
    path = _write(tmp_path / "cut.pkl", {"a": np.zeros(100)})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UnsafePickle, match="cut.pkl: not a readable pickle"):
        load_data_pickle(path)


def test_a_checkpoint_that_runs_code_is_refused_by_name(tmp_path):
    import torch

    from train.checkpoint import CheckpointError, read_checkpoint

    marker = tmp_path / "ran"
    path = tmp_path / "mega.pt"
    torch.save({"model": {"w": _Payload(marker)}}, path)
    with pytest.raises(CheckpointError, match="mega.pt: refused: loading it would run posix.system"):
        read_checkpoint(path)
    plain = _write(tmp_path / "plain.pt", {"model": _Payload(marker)}, protocol=4)
    with pytest.raises(CheckpointError, match="plain.pt: refused: loading it would run"):
        read_checkpoint(plain)
    assert not marker.exists()
