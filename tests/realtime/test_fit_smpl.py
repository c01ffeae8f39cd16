"""SMPL fitting (realtime/fit_smpl.py, `mega-rt fit`): known parameters are recovered from meshes posed
with a test-built SMPL-format model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from realtime.cli import main
from realtime.fit_smpl import BodyModel, FitConfig, FitError, fit_track, matrix_to_axis_angle
from tests.realtime.smpl_fixtures import known_motion, smpl_model_file, write_results
from train.geometry import axis_angle_to_matrix


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, assets_dir):
    return smpl_model_file(tmp_path_factory.mktemp("smpl"), assets_dir)


@pytest.fixture(scope="module")
def model(model_file):
    return BodyModel(model_file)


def test_axis_angle_round_trip_near_zero_and_pi():
    aa = torch.cat([torch.randn(200, 3), torch.tensor([[0.0, 0, 0], [np.pi - 1e-4, 0, 0], [0, 1e-7, 0]])])
    rot = axis_angle_to_matrix(aa)
    assert (axis_angle_to_matrix(matrix_to_axis_angle(rot)) - rot).abs().max() < 1e-4


def test_fit_recovers_known_meshes_within_5mm(model):
    truth = known_motion(model, frames=8, seed=1)
    fit = fit_track(model, truth["verts"], np.arange(8), FitConfig())
    verts, joints = model.forward(fit["global_orient"], fit["body_pose"], fit["betas"].expand(8, -1), fit["transl"])
    err = (verts - truth["verts"]).norm(dim=-1).mean(-1)
    assert err.max() < 5e-3, err
    assert torch.allclose(fit["error"], err, atol=1e-5)
    assert (joints - truth["joints"]).norm(dim=-1).mean() < 5e-3
    assert (fit["betas"][0] - truth["betas"][0]).abs() < 0.1  # the one well-conditioned shape direction (stature)


def test_smoothness_weight_reduces_jitter(model):
    truth = known_motion(model, frames=8, seed=2)
    noisy = truth["verts"] + 0.01 * torch.randn(truth["verts"].shape, generator=torch.Generator().manual_seed(0))

    def jitter(weight):
        fit = fit_track(model, noisy, np.arange(8), FitConfig(smooth_weight=weight))
        v, _ = model.forward(fit["global_orient"], fit["body_pose"], fit["betas"].expand(8, -1), fit["transl"])
        return (v[2:] - 2 * v[1:-1] + v[:-2]).norm(dim=-1).mean().item()

    assert jitter(20.0) < 0.7 * jitter(0.0)


def test_fit_command_writes_the_documented_keys_beside_the_results(tmp_path, model, model_file):
    a, b = known_motion(model, 5, seed=3), known_motion(model, 4, seed=4)
    verts = torch.cat([a["verts"], b["verts"]]).numpy()
    frame = np.r_[np.arange(5), [0, 1, 3, 4]]
    results = write_results(tmp_path / "clip_mega.npz", verts, frame, np.r_[[0] * 5, [7] * 4], model.faces)
    r = CliRunner().invoke(main, ["fit", str(results), "--smpl-model", str(model_file), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "meshes/s" in r.output and "track 7: 4 meshes" in r.output
    out = tmp_path / "clip_mega_smpl.npz"
    z = np.load(out, allow_pickle=False)
    assert str(z["schema"]) == "mega-rt-smpl/1" and str(z["model_type"]) == "smpl"
    assert z["global_orient"].shape == (9, 3) and z["body_pose"].shape == (9, 69) and z["transl"].shape == (9, 3)
    assert z["betas"].shape == (9, 10) and z["track_betas"].shape == (2, 10) and list(z["tracks"]) == [0, 7]
    assert (
        z["joints"].shape == (9, 24, 3)
        and z["rest_joints"].shape == (2, 24, 3)
        and z["rest_verts"].shape == (2, 6890, 3)
    )
    assert (z["fit_error"] < 5e-3).all()  # the results hold float16 vertices: a little above the float32 fit
    np.testing.assert_array_equal(z["frame"][z["track_id"] == 7], [0, 1, 3, 4])
    # the results file is never the output
    r = CliRunner().invoke(main, ["fit", str(results), "--smpl-model", str(model_file), "--out", str(results)])
    assert r.exit_code == 2 and "would be overwritten" in r.output


def test_fit_errors_are_one_line(tmp_path, model_file, model):
    results = write_results(tmp_path / "r.npz", np.zeros((1, 100, 3)), [0], [0], np.zeros((1, 3)))
    r = CliRunner().invoke(main, ["fit", str(results), "--smpl-model", str(model_file)])
    assert r.exit_code == 2 and "100 vertices" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["fit", str(results), "--smpl-model", str(tmp_path / "none.pkl")])
    assert r.exit_code == 2 and "not found" in r.output
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    r = CliRunner().invoke(main, ["fit", str(bad), "--smpl-model", str(model_file)])
    assert r.exit_code == 2 and "not a mega-rt results file" in r.output
    with pytest.raises(FitError, match="SMPL model"):
        BodyModel(tmp_path / "nope.txt")
