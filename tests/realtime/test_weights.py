"""Which weights and detector a run uses, and what it says about them; the first run from nothing to an
overlay of a real video through a local stand-in for the Zenodo record."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from realtime import official, weights
from realtime.infer import WeightsMissing
from tests.helpers import ASSETS, ROOT
from tests.realtime.test_fetch_official import HRNET, MESH, FakeZenodo, fixture_files

STREET = ASSETS / "video" / "street_720p.avi"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEGA_RT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEGA_RT_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_explicit_path_wins_and_finds_the_tokenizer_of_the_official_layout(reference_dir, cache):
    ckpt = reference_dir / "fixtures" / "checkpoint"
    choice = weights.resolve_weights(str(ckpt / HRNET), download=False)
    assert (choice.source, choice.mega, choice.mesh) == ("path", ckpt / HRNET, ckpt / MESH)
    assert choice.warning == ""
    with pytest.raises(WeightsMissing, match="no such file"):
        weights.resolve_weights(str(cache / "nothing.pt"), download=False)


def test_offline_default_is_the_demo_with_its_warning(cache):
    lines = []
    choice = weights.resolve_weights(None, download=False, echo=lines.append)
    assert choice.source == "demo" and choice.warning == weights.DEMO_WARNING
    assert "synthetic people only" in choice.warning and "mega-rt fetch --weights official" in choice.warning
    assert choice.meta() == {"weights_source": "demo", "weights_warning": weights.DEMO_WARNING}
    assert not lines  # nothing was fetched, nothing said about fetching


def test_official_offline_says_what_to_run(cache):
    with pytest.raises(
        WeightsMissing, match=r"not in .*downloading is off.*mega-rt fetch --weights official --backbone resnet"
    ):
        weights.resolve_weights("official", "resnet", download=False)


def test_first_use_download_then_cached(reference_dir, cache, assets_dir):
    server = FakeZenodo(fixture_files(reference_dir))
    try:
        lines = []
        choice = weights.resolve_weights(None, download=True, echo=lines.append, api=server.api)
        assert choice.source == "official" and choice.mega == official.weights_dir() / HRNET
        assert any(f"from Zenodo record {official.RECORD_ID} ({server.api})" in line for line in lines)
        n = len(server.requests)
        again = weights.resolve_weights(None, download=True, echo=lines.append, api=server.api)
        assert again == choice and len(server.requests) == n
    finally:
        server.close()


def test_server_down_falls_back_to_the_demo_with_a_line(cache, monkeypatch):
    monkeypatch.setenv(official.API_ENV, "http://127.0.0.1:9/api")
    lines = []
    choice = weights.resolve_weights(None, download=True, echo=lines.append)
    assert choice.source == "demo"
    assert any("could not be fetched" in line and "cannot reach" in line for line in lines)
    with pytest.raises(WeightsMissing, match="cannot reach"):
        weights.resolve_weights("official", download=True, echo=lines.append)


def test_detector_default_lives_in_the_cache_and_offline_names_the_bundled_one(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        WeightsMissing, match=r"detector yolo11n.pt: not in .*detectors.*--detector demo --det-imgsz 320"
    ):
        weights.resolve_detector("yolo11n.pt", download=False)
    cached = cache / "detectors" / "yolo11n.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert weights.resolve_detector("yolo11n.pt", download=False).spec == str(cached)
    demo = weights.resolve_detector("demo", download=False)
    assert demo.source == "demo" and demo.imgsz == 320 and "synthetic people only" in demo.warning
    assert weights.resolve_detector("full-frame").meta() == {"detector_source": "full-frame", "detector_warning": ""}


def test_regressor_files_are_read_without_pickle_and_shape_checked(tmp_path):
    from train.joints import RegressorError

    good = tmp_path / "J_regressor_h36m.npy"
    np.save(good, np.full((17, 6890), 1 / 6890, np.float32))
    assert tuple(weights.load_regressor_file(good).shape) == (17, 6890)
    bad = tmp_path / "J_regressor_extra.npy"
    np.save(bad, np.zeros((9, 100), np.float32))
    with pytest.raises(RegressorError, match=r"shape \(9, 100\), expected \(J, 6890\)"):
        weights.load_regressor_file(bad)
    pickled = tmp_path / "J_regressor.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RegressorError, match="unreadable"):
        weights.load_regressor_file(pickled)
    with pytest.raises(RegressorError, match="pickles are not read"):
        weights.load_regressor_file(tmp_path / "basicModel_neutral.pkl")


def _cli(args, env, timeout=900):
    return subprocess.run([sys.executable, "-m", "realtime.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _clean_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEGA_RT_")}
    env.update(PYTHONPATH=str(ROOT), MEGA_RT_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", **extra)
    return env


def test_first_run_fetch_then_video_of_a_real_clip(reference_dir, tmp_path):
    """From an empty cache: `mega-rt fetch --weights official` (assets from a folder, weights from the
    record API on 127.0.0.1), then `mega-rt video` with no weights options runs the official weights."""
    if not STREET.is_file():
        pytest.skip(f"{STREET} not found")
    server = FakeZenodo(fixture_files(reference_dir))
    try:
        env = _clean_env(tmp_path, MEGA_RT_ZENODO_API=server.api)
        r = _cli(["fetch", "--weights", "official", "--base-url", ASSETS], env)
        assert r.returncode == 0, r.stderr
        assert f"fetching {HRNET}, {MESH} from Zenodo record {official.RECORD_ID} ({server.api})" in r.stdout
        out = tmp_path / "street_mega.mp4"
        r = _cli(["video", STREET, "--out", out, "--detector", "full-frame", "--max-frames", "3", "--no-progress"], env)
        assert r.returncode == 0, r.stderr
    finally:
        server.close()
    assert "official MEGA-hrnet" in r.stdout and "warning" not in r.stderr
    assert out.stat().st_size > 0
    with np.load(out.with_suffix(".npz"), allow_pickle=False) as z:
        assert str(z["weights_source"]) == "official" and str(z["weights_warning"]) == ""
        assert z["verts"].shape[0] == 3


def test_offline_first_run_says_exactly_what_to_do(tmp_path):
    env = _clean_env(tmp_path, MEGA_RT_OFFLINE="1", MEGA_RT_ASSETS=str(ASSETS))
    r = _cli(["video", STREET, "--out", tmp_path / "o.mp4", "--weights", "official", "--detector", "full-frame"], env)
    assert r.returncode == 2
    assert "mega-rt fetch --weights official --backbone hrnet" in r.stderr and "Traceback" not in r.stderr
    r = _cli(["video", STREET, "--out", tmp_path / "o.mp4", "--max-frames", "1"], env)
    assert r.returncode == 2 and "--detector demo --det-imgsz 320" in r.stderr and "Traceback" not in r.stderr
    out = tmp_path / "d.mp4"
    r = _cli(["video", STREET, "--out", out, "--detector", "demo", "--max-frames", "2", "--no-progress"], env)
    assert r.returncode == 0, r.stderr
    assert weights.DEMO_WARNING in r.stderr and weights.DEMO_DETECTOR_WARNING in r.stderr
    with np.load(out.with_suffix(".npz"), allow_pickle=False) as z:
        assert str(z["weights_source"]) == "demo" and str(z["detector_source"]) == "demo"
        assert "synthetic people only" in str(z["detector_warning"])


def test_info_prints_what_runs_by_default(cache, reference_dir, monkeypatch):
    from click.testing import CliRunner

    from realtime.cli import main

    monkeypatch.setenv("MEGA_RT_OFFLINE", "1")
    official.install_from(reference_dir / "fixtures" / "checkpoint", echo=lambda s: None)
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert f"{HRNET}: ok" in result.output and "CVQMAE/mega_vit: missing" in result.output
    assert "weights: official MEGA-hrnet" in result.output and "[official]" in result.output
    assert "detector: yolo11n.pt (offline: not available)" in result.output
    assert "device: cpu" in result.output
    json.dumps(result.output)
