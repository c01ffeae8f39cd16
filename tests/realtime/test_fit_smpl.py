"""SMPL and SMPL-X fitting (realtime/fit_smpl.py, `mega-rt fit`, `video --fit-smpl`,
MeshRecovery.fit_smpl): known parameters are recovered from meshes posed with test-built SMPL- and
SMPL-X-format model files; SMPL-X through a vertex map to SMPL's topology."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from realtime.cli import main
from realtime.fit_smpl import BodyModel, FitConfig, FitError, VertexMap, fit_track, matrix_to_axis_angle
from tests.helpers import write_scene_clip
from tests.realtime.smpl_fixtures import (
    known_motion,
    smpl_model_file,
    smplx_model_file,
    write_csr_npz,
    write_results,
)
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


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


# -- video --fit-smpl and MeshRecovery.fit_smpl ---------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 4-frame synthetic clip of 2 people; its ground-truth npz serves as --boxes."""
    from train.synthetic.scene import SceneConfig

    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    return write_scene_clip(out, SceneConfig(width=160, height=120, frames=4, people=2, seed=3, fps=25.0))


def _video(clip, results, model, *extra):
    args = ["video", clip[0], "--boxes", clip[1], "--results", results, "--no-render", "--fit-smpl", model]
    args += ["--weights", "demo", "--threads", "1", "--no-progress", "--device", "cpu", *extra]
    return CliRunner().invoke(main, [str(a) for a in args])


def test_video_fit_smpl_writes_one_shape_per_track_and_the_api_gives_the_same(tmp_path, clip, model_file):
    from realtime.api import MeshRecovery

    results = tmp_path / "run.npz"
    r = _video(clip, results, model_file)
    assert r.exit_code == 0, r.output
    assert "meshes/s" in r.output
    res = np.load(results)
    z = dict(np.load(tmp_path / "run_smpl.npz", allow_pickle=False))
    tracks = sorted(set(res["track_id"].tolist()))
    assert len(tracks) == 2 and z["tracks"].tolist() == tracks
    rows = len(res["frame"])
    assert z["track_betas"].shape == (2, 10) and z["betas"].shape == (rows, 10)
    assert z["global_orient"].shape == (rows, 3) and z["body_pose"].shape == (rows, 69)
    assert z["transl"].shape == (rows, 3) and z["joints"].shape == (rows, 24, 3)
    np.testing.assert_array_equal(np.sort(z["row"]), np.arange(rows))
    np.testing.assert_array_equal(z["frame"], res["frame"][z["row"]])
    for k, track in enumerate(tracks):
        mine = z["track_id"] == track
        assert mine.sum() == 4 and (z["betas"][mine] == z["track_betas"][k]).all()  # one shape per track
        assert np.ptp(z["body_pose"][mine], axis=0).max() > 1e-3  # a pose per frame
    assert (z["fit_error"] < 0.04).all(), z["fit_error"]  # the demo weights give bodies a fit follows

    api = MeshRecovery.fit_smpl(str(results), str(model_file), out=str(tmp_path / "api_smpl.npz"))
    assert set(api) == set(z)
    for key in set(z) - {"fit_seconds"}:
        np.testing.assert_array_equal(api[key], z[key], err_msg=key)


def test_video_fit_smpl_refuses_before_the_run(tmp_path, clip, model_file, smplx_file):
    import shutil

    boxes = shutil.copy(clip[1], tmp_path / "run_smpl.npz")  # the boxes file has the fit's name
    line = _error_line(_video((clip[0], boxes), tmp_path / "run.npz", model_file))
    assert "run_smpl.npz" in line and "--boxes" in line and "choose another --results" in line
    model_copy = shutil.copy(model_file, tmp_path / "a_smpl.npz")
    line = _error_line(_video(clip, tmp_path / "a.npz", model_copy))
    assert "a_smpl.npz" in line and "the input --fit-smpl" in line
    line = _error_line(_video(clip, tmp_path / "x.npz", smplx_file[0]))
    assert "--correspondence" in line and "10475" in line
    line = _error_line(_video(clip, tmp_path / "y.npz", model_file, "--correspondence", tmp_path / "none.npz"))
    assert "none.npz" in line and "not found" in line
    ran = [name for name in ("run.npz", "a.npz", "x.npz", "y.npz") if (tmp_path / name).exists()]
    assert not ran, f"the video wrote {ran} although the fit could not run"


def test_the_api_refuses_to_overwrite_an_input(tmp_path, model, model_file):
    from realtime.api import MeshRecovery

    truth = known_motion(model, 2, seed=5)
    results = write_results(tmp_path / "r.npz", truth["verts"].numpy(), [0, 1], [0, 0], model.faces)
    with pytest.raises(FitError, match="is an input"):
        MeshRecovery.fit_smpl(str(results), str(model_file), out=str(results))
    assert np.load(results)["verts"].shape == (2, 6890, 3)


# -- SMPL-X through a vertex map --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smplx_file(tmp_path_factory, assets_dir):
    return smplx_model_file(tmp_path_factory.mktemp("smplx"), assets_dir)


@pytest.fixture(scope="module")
def smplx_model(smplx_file):
    return BodyModel(smplx_file[0])


def test_the_smplx_format_fixture_poses_as_smplx_does(smplx_file, smplx_model):
    """The body model's SMPL-X pass (21 body joints; jaw, eyes, fingers at rest) is smplx's SMPLX."""
    smplx = pytest.importorskip("smplx")
    assert smplx_model.kind == "smplx" and smplx_model.num_body_joints == 21 and smplx_model.num_verts == 10475
    truth = known_motion(smplx_model, 3, seed=1)
    ref = smplx.SMPLX(str(smplx_file[0]), ext="npz", use_pca=False, flat_hand_mean=True, num_betas=10, batch_size=3)
    out = ref(
        betas=truth["betas"].expand(3, -1), global_orient=truth["global_orient"],
        body_pose=truth["body_pose"], transl=truth["transl"],
    )  # fmt: skip
    torch.testing.assert_close(out.vertices, truth["verts"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints[:, :55], truth["joints"], atol=1e-5, rtol=0)


def test_correspondence_files_of_every_layout_read_as_one_map(tmp_path):
    """Dense and CSR .npz, smplx's `mtx` pickle (its second block of columns acts on normals and is
    dropped) and a dense `matrix` pickle: one map; a row with many inputs goes through the dense product."""
    import pickle

    from realtime.fit_smpl import load_correspondence

    rng = np.random.default_rng(0)
    matrix = rng.random((6, 40)) * (rng.random((6, 40)) < 0.2)
    matrix[:, 0] += 0.5
    matrix[5] = rng.random(40)  # 40 inputs: more than the gather takes
    rows, cols = np.nonzero(matrix)
    triplets = (rows, cols, matrix[rows, cols], matrix.shape)
    np.savez(tmp_path / "dense.npz", matrix=matrix)
    with open(tmp_path / "deftrafo.pkl", "wb") as fh:
        pickle.dump({"mtx": np.concatenate([matrix, rng.standard_normal(matrix.shape)], 1)}, fh)
    with open(tmp_path / "matrix.pkl", "wb") as fh:
        pickle.dump({"matrix": matrix}, fh)
    files = [write_csr_npz(tmp_path / "csr.npz", triplets)] + [
        tmp_path / name for name in ("dense.npz", "deftrafo.pkl", "matrix.pkl")
    ]
    verts = torch.randn(3, 40, 3)
    expected = torch.einsum("oi,bic->boc", torch.tensor(matrix, dtype=torch.float32), verts)
    for f in files:
        vertex_map = load_correspondence(f)
        assert vertex_map.shape == (6, 40), f
        torch.testing.assert_close(vertex_map(verts), expected, msg=str(f))
    sparse_rows = VertexMap(rows[rows < 5], cols[rows < 5], matrix[rows, cols][rows < 5], (5, 40), None)
    assert sparse_rows.matrix is None  # a few inputs per row: the gather
    torch.testing.assert_close(sparse_rows(verts), expected[:, :5])


@pytest.mark.parametrize("direction", ["smplx_to_smpl", "smpl_to_smplx"])
def test_smplx_is_fitted_to_smpl_meshes_through_a_correspondence(tmp_path, smplx_file, smplx_model, direction):
    """SMPL-X posed with known parameters, mapped to SMPL's 6890 vertices, is recovered within 5 mm,
    whichever way the map goes: SMPL-X mapped to SMPL, or the meshes mapped to SMPL-X."""
    path, maps = smplx_file
    to_smpl = VertexMap(*maps["smplx_to_smpl"], path)
    a, b = known_motion(smplx_model, 4, seed=1), known_motion(smplx_model, 3, seed=2)
    truth_smplx = torch.cat([a["verts"], b["verts"]])
    meshes = to_smpl(truth_smplx)
    faces = np.zeros((1, 3), np.int64)
    results = write_results(tmp_path / "clip.npz", meshes.numpy(), np.r_[0:4, 0:3], np.r_[[1] * 4, [2] * 3], faces)
    mapping = write_csr_npz(tmp_path / f"{direction}.npz", maps[direction])
    r = CliRunner().invoke(
        main, ["fit", str(results), "--smpl-model", str(path), "--correspondence", str(mapping), "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    assert "fitted SMPLX to 7 meshes" in r.output and "meshes/s" in r.output
    z = np.load(tmp_path / "clip_smpl.npz", allow_pickle=False)
    assert str(z["model_type"]) == "smplx" and str(z["correspondence_file"]) == str(mapping)
    assert z["body_pose"].shape == (7, 63) and z["joints"].shape == (7, 55, 3) and z["track_betas"].shape == (2, 10)
    assert z["rest_verts"].shape == (2, 10475, 3) and z["skin_weights"].shape == (10475, 55)
    with torch.no_grad():
        fitted, _ = smplx_model.forward(
            *(torch.from_numpy(z[k]) for k in ("global_orient", "body_pose", "betas", "transl"))
        )
    smpl_error = (to_smpl(fitted) - meshes).norm(dim=-1).mean(-1)
    smplx_error = (fitted - truth_smplx).norm(dim=-1).mean(-1)
    assert smpl_error.max() < 5e-3 and smplx_error.max() < 5e-3, (smpl_error, smplx_error)
    assert (z["fit_error"] < 5e-3).all()


def test_an_smplx_model_without_correspondence_is_one_line_naming_the_option(tmp_path, smplx_file, model):
    truth = known_motion(model, 2, seed=5)
    results = write_results(tmp_path / "r.npz", truth["verts"].numpy(), [0, 1], [0, 0], model.faces)
    line = _error_line(CliRunner().invoke(main, ["fit", str(results), "--smpl-model", str(smplx_file[0])]))
    assert "--correspondence" in line and "6890" in line and "10475" in line


def test_a_correspondence_that_does_not_fit_is_one_line(tmp_path, smplx_file, model_file, model):
    path, maps = smplx_file
    truth = known_motion(model, 2, seed=5)
    results = write_results(tmp_path / "r.npz", truth["verts"].numpy(), [0, 1], [0, 0], model.faces)

    def fit(model_path, mapping):
        return _error_line(
            CliRunner().invoke(
                main, ["fit", str(results), "--smpl-model", str(model_path), "--correspondence", str(mapping)]
            )
        )

    rows, cols, values, _ = maps["smplx_to_smpl"]
    small = write_csr_npz(tmp_path / "small.npz", (rows[:100], cols[:100], values[:100], (100, 10475)))
    assert "100 x 10475" in fit(path, small) and "6890 x 10475" in fit(path, small)
    gap = write_csr_npz(tmp_path / "gap.npz", (rows[1:], cols[1:], values[1:], (6890, 10475)))
    assert "1 of the 6890 output vertices map from nothing" in fit(path, gap)
    np.savez(tmp_path / "keys.npz", weights=np.zeros(3))
    assert "`matrix` or a CSR matrix" in fit(path, tmp_path / "keys.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, data=np.ones(2), indices=np.array([0, 99999]), indptr=np.array([0, 1, 2]), shape=np.array([2, 10475]))
    assert "column indices outside" in fit(path, bad)
    csr = write_csr_npz(tmp_path / "ok.npz", maps["smplx_to_smpl"])
    assert "drop --correspondence" in fit(model_file, csr)
    (tmp_path / "map.txt").write_text("1 0")
    assert "must be an .npz" in fit(path, tmp_path / "map.txt")


def test_a_deformation_transfer_pickle_runs_no_code(tmp_path, smplx_file, model):
    import os
    import pickle

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump({"mtx": Exploit()}, fh)
    truth = known_motion(model, 2, seed=5)
    results = write_results(tmp_path / "r.npz", truth["verts"].numpy(), [0, 1], [0, 0], model.faces)
    args = ["fit", str(results), "--smpl-model", str(smplx_file[0]), "--correspondence", str(tmp_path / "evil.pkl")]
    assert "refused" in _error_line(CliRunner().invoke(main, args))
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_a_scipy_sparse_deformation_transfer_pickle_is_read(tmp_path, smplx_file):
    """smplx's released *_deftrafo_setup.pkl holds a scipy sparse `mtx`."""
    sparse = pytest.importorskip("scipy.sparse", reason="scipy is not installed (only its sparse pickles need it)")
    import pickle

    from realtime.fit_smpl import load_correspondence

    path, maps = smplx_file
    rows, cols, values, shape = maps["smpl_to_smplx"]
    mtx = sparse.csc_matrix(
        (np.r_[values, values], (np.r_[rows, rows], np.r_[cols, cols + shape[1]])), (shape[0], 2 * shape[1])
    )
    with open(tmp_path / "smpl2smplx_deftrafo_setup.pkl", "wb") as fh:
        pickle.dump({"mtx": mtx}, fh)
    loaded = load_correspondence(tmp_path / "smpl2smplx_deftrafo_setup.pkl")
    x = torch.randn(2, shape[1], 3)
    torch.testing.assert_close(loaded(x), VertexMap(rows, cols, values, shape, path)(x))
