"""The training loop: one step learns, DDP on CPU equals one process, a killed run resumes exactly,
the artefacts load, and the CLI reports bad input in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.helpers import ROOT
from tests.train.fixtures import write_crop_fixture, write_smpl_model
from train.config import MeshVQVAEConfig, TrainConfig, config_to_dict
from train.data.mixing import micro_batch_samples
from train.distributed import DistInfo
from train.synthetic import body as body_lib

TINY_MEGA = dict(
    name="mega_test_tiny", backbone="hrnet", hrnet_width=8, input_height=64, input_width=64, emb_dim=32,
    encoder_layers=1, encoder_heads=2, decoder_layers=1, decoder_heads=2, cond_length=4, cond_dim=120,
)  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory, assets_dir):
    """A tiny MEGA config, a random tokenizer checkpoint, a crop dataset and an SMPL-format model."""
    from train.checkpoint import save_checkpoint
    from train.model.mesh_vqvae import MeshVQVAE

    root = tmp_path_factory.mktemp("train")
    (root / "mega_tiny.yaml").write_text(yaml.safe_dump(TINY_MEGA))
    torch.manual_seed(0)
    save_checkpoint(root / "tokenizer.pt", MeshVQVAE.from_assets(MeshVQVAEConfig(), assets_dir), MeshVQVAEConfig())
    rig = body_lib.load_rig(assets_dir)
    write_crop_fixture(root / "crops", rig, count=8)
    from train.data.joints import synthetic_joint_regressor

    write_smpl_model(root / "SMPL_NEUTRAL.pkl", rig, synthetic_joint_regressor(assets_dir))
    return root


def make_cfg(files: Path, stage: str, out: Path, **kw) -> TrainConfig:
    base = dict(
        stage=stage, out_dir=str(out), seed=0, model_config=str(files / "mega_tiny.yaml"),
        tokenizer_weights=str(files / "tokenizer.pt"), steps=4, batch_size=4, warmup_steps=1, threads=1,
        checkpoint_every=2, log_every=1, synthetic_meshes=16, crop_dirs=(str(files / "crops"),),
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def write_cfg(cfg: TrainConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


def cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "realtime.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)  # fmt: skip


# ---- one step ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stage",
    ["tokenizer", "backbone", "backbone+rotcam", "backbone+yaw", "pretrain", "hmr", "hmr+yaw", "hmr+full", "hmr+pose"],
)
def test_one_optimisation_step_lowers_the_loss_on_a_fixed_batch(files, tmp_path, stage):
    from train.loop import make_optimizer
    from train.stages import build_stage

    torch.manual_seed(0)
    extra = {
        "backbone+rotcam": {"backbone_rotcam": True},
        "backbone+yaw": {"yaw_bins": 8},
        "hmr+yaw": {"yaw_bins": 8},
        "hmr+full": {"full_mask_prob": 0.5},
        "hmr+pose": {"pose_head_weight": 10.0},
    }.get(stage, {})
    cfg = make_cfg(files, stage.split("+")[0], tmp_path, lr=1e-3 if stage == "tokenizer" else 3e-4, **extra)
    s = build_stage(cfg, DistInfo())
    s.module.train(s.train_mode)
    batch = s.dataset[list(range(4))]
    optimizer = make_optimizer(s, cfg)

    def loss():
        torch.manual_seed(1)  # the same dropout masks both times
        terms = s.loss(s.module, batch)
        assert set(terms) >= {"loss"} and all(t.ndim == 0 for t in terms.values())
        return terms["loss"]

    before = loss()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert after.item() < before.item()


def test_optimiser_is_adamw_with_the_papers_settings_and_a_warm_cosine_schedule(files, tmp_path):
    from train.loop import lr_factor, make_optimizer
    from train.stages import build_stage

    cfg = make_cfg(files, "pretrain", tmp_path, lr=1e-3, lr_reference_batch=256, batch_size=16, weight_decay=0.05)
    stage = build_stage(cfg, DistInfo())
    opt = make_optimizer(stage, cfg)
    assert (
        isinstance(opt, torch.optim.AdamW)
        and opt.defaults["betas"] == (0.9, 0.99)
        and opt.defaults["weight_decay"] == 0.05
    )
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 16 / 256)  # the official batch / 256 scaling
    factors = [lr_factor(s, 10, 110, 0.0) for s in range(110)]
    assert (
        factors[0] == pytest.approx(0.1)
        and factors[9] == 1.0
        and factors[60] == pytest.approx(0.5)
        and factors[-1] < 1e-3
    )


# ---- DDP -----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gradients(cfg: TrainConfig, rank: int, world: int) -> dict:
    """Gradients (and the codebook after the step's EMA update) of step 0 in process `rank` of `world`."""
    from torch.nn.parallel import DistributedDataParallel

    from train import distributed
    from train.stages import build_stage

    torch.set_num_threads(1)
    info = distributed.setup("cpu") if world > 1 else DistInfo()
    torch.manual_seed(cfg.seed)
    stage = build_stage(cfg, info)
    model = DistributedDataParallel(stage.module) if world > 1 else stage.module
    model.train(stage.train_mode)
    batch = stage.dataset[list(micro_batch_samples(0, 0, rank, cfg.batch_size, 1, world))]
    stage.loss(model, batch)["loss"].backward()
    out = {"grads": {n: p.grad.clone() for n, p in stage.module.named_parameters() if p.grad is not None}}
    if stage.after_step is not None:
        stage.after_step(0)
        out["codebook"] = stage.module.vq_vae.codebook.clone()
    return out


def _ddp_worker(rank: int, world: int, cfg: TrainConfig, port: int, out_path: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    from train import distributed

    try:
        result = _gradients(cfg, rank, world)
        torch.save(result, f"{out_path}.{rank}")
    finally:
        distributed.teardown()


@pytest.mark.parametrize("stage", ["pretrain", "tokenizer"])
def test_ddp_on_two_cpu_processes_gives_the_gradients_of_one_process_on_the_whole_batch(files, tmp_path, stage):
    import torch.multiprocessing as mp

    cfg = make_cfg(files, stage, tmp_path / "out", batch_size=8)
    mp.spawn(_ddp_worker, args=(2, cfg, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    single = _gradients(cfg, 0, 1)
    for rank in range(2):
        ddp = torch.load(f"{tmp_path / 'ddp'}.{rank}", weights_only=True)
        assert ddp["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            assert torch.allclose(ddp["grads"][name], grad, rtol=1e-4, atol=1e-7), name
        if "codebook" in single:  # every process took the EMA step of the whole batch
            assert torch.allclose(ddp["codebook"], single["codebook"], atol=1e-5)


def test_gradient_accumulation_takes_the_step_of_the_whole_batch(files, tmp_path):
    from train.loop import train

    whole = make_cfg(files, "pretrain", tmp_path / "a", steps=2, batch_size=8, checkpoint_every=10)
    accumulated = make_cfg(files, "pretrain", tmp_path / "b", steps=2, batch_size=8, grad_accum=4, checkpoint_every=10)
    train(whole, progress=False)
    train(accumulated, progress=False)
    _assert_same_weights(_final_weights(tmp_path / "b"), _final_weights(tmp_path / "a"))


# ---- resume --------------------------------------------------------------------------------------
def _final_weights(out: Path) -> dict:
    return torch.load(out / "final.pt", weights_only=True)["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-6), k


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before writing {path.name}: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no {path.name} after {timeout} s")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def uninterrupted(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    cfg = make_cfg(files, "pretrain", out, steps=150, checkpoint_every=5, log_every=10)
    proc = cli("train", "pretrain", "--config", str(write_cfg(cfg, out.parent / f"{out.name}.yaml")), "--no-progress")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return cfg, _final_weights(out)


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_a_killed_run_resumes_to_the_same_weights(tmp_path, uninterrupted, how):
    import dataclasses

    cfg, expected = uninterrupted
    cfg = dataclasses.replace(cfg, out_dir=str(tmp_path / "run"))
    path = write_cfg(cfg, tmp_path / "run.yaml")
    proc = cli("train", "pretrain", "--config", str(path), "--no-progress")
    _wait_for(tmp_path / "run" / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert not (tmp_path / "run" / "final.pt").exists(), "the run finished before it was stopped"
    step = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < cfg.steps
    if how == "sigterm":  # a clean stop: a checkpoint of the step it stopped at and a one-line message
        assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    resumed = cli("train", "pretrain", "--config", str(path), "--resume", "--no-progress")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    _assert_same_weights(_final_weights(tmp_path / "run"), expected)


def test_stop_after_then_resume_in_process_matches_for_hmr(files, tmp_path):
    """The image stage too (dropout RNG, augmentation, batch norm state): 2 + 2 steps == 4 steps."""
    from train.loop import train

    straight = make_cfg(files, "hmr", tmp_path / "a", steps=4)
    train(straight, progress=False)
    split = make_cfg(files, "hmr", tmp_path / "b", steps=4)
    train(split, progress=False, stop_after=2)
    assert not (tmp_path / "b" / "final.pt").exists()
    train(split, resume=True, progress=False)
    _assert_same_weights(_final_weights(tmp_path / "b"), _final_weights(tmp_path / "a"))


# ---- artefacts and the CLI -----------------------------------------------------------------------
def test_final_artefacts_load_with_the_checkpoint_loaders_and_evaluate(files, tmp_path):
    from train.checkpoint import load_mega, load_mesh_vqvae, load_pretrain_model
    from train.loop import train

    tok = make_cfg(files, "tokenizer", tmp_path / "tok", steps=2)
    train(tok, progress=False)
    load_mesh_vqvae(tmp_path / "tok" / "final.pt")
    pre = make_cfg(files, "pretrain", tmp_path / "pre", steps=2, tokenizer_weights=str(tmp_path / "tok" / "final.pt"))
    train(pre, progress=False)
    load_pretrain_model(tmp_path / "pre" / "final.pt")
    hmr = make_cfg(files, "hmr", tmp_path / "hmr", steps=2, tokenizer_weights=str(tmp_path / "tok" / "final.pt"),
                   init_weights=str(tmp_path / "pre" / "final.pt"))  # fmt: skip
    metrics = train(hmr, progress=False)
    assert metrics["steps_done"] == 2 and {"tokens", "rotation", "camera", "loss"} <= set(metrics["final"])
    lines = [__import__("json").loads(l) for l in (tmp_path / "hmr" / "scalars.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2] and all("samples_per_s" in l for l in lines)
    mega, cfg = load_mega(tmp_path / "hmr" / "final.pt")
    assert cfg.name == "mega_test_tiny"
    proc = cli("eval", "hmr", "--weights", str(tmp_path / "hmr" / "final.pt"), "--tokenizer", str(tmp_path / "tok" / "final.pt"),
               "--crops", str(files / "crops"), "--samples", "1,3", "--steps", "2", "--batch", "4",
               "--mean-mesh-from", str(files / "crops"), "--json", str(tmp_path / "eval.json"))  # fmt: skip
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    result = __import__("json").loads((tmp_path / "eval.json").read_text())
    assert result["samples"] == 8
    for key in ("det_pve", "det_mpjpe", "det_pa_mpjpe", "q3_best_pve", "q3_mean_pve", "q3_vertex_std", "baseline_pve_canonical",
                "baseline_constant_pve", "baseline_gt_rotation_pve"):  # fmt: skip
        assert result[key] > 0, key
    assert result["q3_best_pve"] <= result["q1_best_pve"] + 1e-6
    # bf16 autocast (the CPU speed option) evaluates the same crops; its figures stay near fp32's
    proc = cli("eval", "hmr", "--weights", str(tmp_path / "hmr" / "final.pt"), "--tokenizer", str(tmp_path / "tok" / "final.pt"),
               "--crops", str(files / "crops"), "--samples", "", "--precision", "bf16", "--json", str(tmp_path / "eval_bf16.json"))  # fmt: skip
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    bf16 = __import__("json").loads((tmp_path / "eval_bf16.json").read_text())
    assert bf16["samples"] == 8 and abs(bf16["det_pve"] - result["det_pve"]) < 0.25 * result["det_pve"]
    # a 3DPW/EMDB file as the VQ-HPS preprocessing writes it, with a user regressor (17 joints)
    npz = _vqhps_fixture(tmp_path / "3dpw", files)
    np.save(tmp_path / "J_regressor_h36m.npy", np.full((17, 6890), 1 / 6890, np.float32))
    proc = cli("eval", "hmr", "--weights", str(tmp_path / "hmr" / "final.pt"), "--tokenizer", str(tmp_path / "tok" / "final.pt"),
               "--npz", str(npz), "--image-dir", str(tmp_path / "3dpw"), "--smpl-model", str(files / "SMPL_NEUTRAL.pkl"),
               "--regressor", str(tmp_path / "J_regressor_h36m.npy"), "--samples", "2", "--steps", "2")  # fmt: skip
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "det_pa_mpjpe" in out and "q2_best_pve" in out
    proc = cli("eval", "hmr", "--weights", str(tmp_path / "hmr" / "final.pt"), "--tokenizer", str(tmp_path / "tok" / "final.pt"),
               "--npz", str(npz), "--smpl-model", str(files / "SMPL_NEUTRAL.pkl"))  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--regressor" in err and len(err.strip().splitlines()) == 1


def test_backbone_stage_starts_hmr_and_a_tokenizer_run_continues_from_given_weights(files, tmp_path):
    from train.checkpoint import CheckpointError, read_checkpoint
    from train.config import ConfigError
    from train.loop import train
    from train.stages import build_stage

    bb = make_cfg(files, "backbone", tmp_path / "bb", steps=2)
    metrics = train(bb, progress=False)
    assert {"heatmaps", "joint_px"} <= set(metrics["final"]) and metrics["final"]["joint_px"] > 0
    trained = read_checkpoint(tmp_path / "bb" / "final.pt")
    assert trained["stage"] == "backbone" and "final_layer.weight" in trained["model"]
    hmr = build_stage(
        make_cfg(files, "hmr", tmp_path / "hmr", backbone_weights=str(tmp_path / "bb" / "final.pt")), DistInfo()
    )
    own = hmr.module.mega.backbone.state_dict()
    assert set(own) == set(trained["model"])
    assert all(torch.equal(own[k], v) for k, v in trained["model"].items())
    # the 1/32 heads only feed MEGA: the backbone stage leaves them as initialised, and says so by freezing them
    stage = build_stage(bb, DistInfo())
    assert not any(p.requires_grad for p in stage.module.backbone.downsample_stage_1.parameters())
    # with backbone_rotcam the rotation/camera head trains too (the 1/32 heads then do) and hmr starts from it
    bbr = make_cfg(files, "backbone", tmp_path / "bbr", steps=2, backbone_rotcam=True)
    metrics = train(bbr, progress=False)
    assert {"rotation", "camera", "rotation_deg"} <= set(metrics["final"]) and 0 <= metrics["final"][
        "rotation_deg"
    ] <= 180
    trained = read_checkpoint(tmp_path / "bbr" / "final.pt")["model"]
    assert (
        "backbone.final_layer.weight" in trained
        and "rot_predictor.weight" in trained
        and "rotcam_head.0.weight" in trained
    )
    assert any(p.requires_grad for p in build_stage(bbr, DistInfo()).module.backbone.downsample_stage_1.parameters())
    hmr = build_stage(
        make_cfg(files, "hmr", tmp_path / "hmr", backbone_weights=str(tmp_path / "bbr" / "final.pt")), DistInfo()
    )
    mega = hmr.module.mega
    assert all(
        torch.equal(mega.backbone.state_dict()[k[len("backbone.") :]], v)
        for k, v in trained.items()
        if k.startswith("backbone.")
    )
    for k in ("rotcam_head.0.weight", "rotcam_head.2.bias", "rot_predictor.weight", "cam_predictor.bias"):
        assert torch.equal(mega.decoder.state_dict()[k], trained[k])
    # yaw_bins: a train-only yaw classifier on the pooled MEGA features (so the 1/32 heads train); it is logged
    # and left out of final.pt, with or without the rotation/camera head, and hmr loads what is left
    for name, extra in (("bby", {}), ("bbry", {"backbone_rotcam": True})):
        cfg = make_cfg(files, "backbone", tmp_path / name, steps=2, yaw_bins=8, **extra)
        metrics = train(cfg, progress=False)
        assert {"yaw", "yaw_deg"} <= set(metrics["final"]) and 0 <= metrics["final"]["yaw_deg"] <= 180
        assert any(
            p.requires_grad for p in build_stage(cfg, DistInfo()).module.backbone.downsample_stage_1.parameters()
        )
        trained = read_checkpoint(tmp_path / name / "final.pt")["model"]
        assert not any("yaw" in k for k in trained)
        assert ("rot_predictor.weight" in trained) == bool(extra)
        build_stage(
            make_cfg(files, "hmr", tmp_path / "hmr", backbone_weights=str(tmp_path / name / "final.pt")), DistInfo()
        )
    # a backbone run continues an earlier one (init_weights): the backbone, and the head when both have one
    for init, extra in (("bb", {}), ("bbr", {}), ("bbr", {"backbone_rotcam": True}), ("bby", {"yaw_bins": 4})):
        stage = build_stage(
            make_cfg(files, "backbone", tmp_path / "c", init_weights=str(tmp_path / init / "final.pt"), **extra),
            DistInfo(),
        )
        before = read_checkpoint(tmp_path / init / "final.pt")["model"]
        now = stage.module.exported().state_dict()
        now = (
            now
            if "backbone.final_layer.weight" in now or "backbone.final_layer.weight" not in before
            else {f"backbone.{k}": v for k, v in now.items()}
        )
        shared = [k for k in before if k in now]
        assert len(shared) >= len(stage.module.backbone.state_dict()) and all(
            torch.equal(now[k], before[k]) for k in shared
        )
    with pytest.raises(CheckpointError, match="does not fit this backbone run"):
        build_stage(
            make_cfg(
                files, "backbone", tmp_path / "c", init_weights=str(tmp_path / "bb" / "final.pt"), backbone_rotcam=True
            ),
            DistInfo(),
        )
    with pytest.raises(CheckpointError, match="not a backbone-stage checkpoint"):
        build_stage(make_cfg(files, "backbone", tmp_path / "c", init_weights=str(files / "tokenizer.pt")), DistInfo())
    with pytest.raises(ConfigError, match="init_weights is not used by the pretrain stage"):
        make_cfg(files, "pretrain", tmp_path / "x", init_weights=str(tmp_path / "bb" / "final.pt"))
    hmr_yaw = make_cfg(files, "hmr", tmp_path / "hmry", steps=2, yaw_bins=8)
    metrics = train(hmr_yaw, progress=False)
    assert {"yaw", "yaw_deg", "rotation_deg"} <= set(metrics["final"])
    trained = read_checkpoint(tmp_path / "hmry" / "final.pt")["model"]
    assert not any("yaw" in k for k in trained) and "decoder.rot_predictor.weight" in trained
    for bad in (1, -2):
        with pytest.raises(ConfigError, match="yaw_bins must be 0"):
            make_cfg(files, "hmr", tmp_path / "x", yaw_bins=bad)
    with pytest.raises(ConfigError, match="yaw_bins is a setting of the backbone and hmr stages"):
        make_cfg(files, "pretrain", tmp_path / "x", yaw_bins=8)
    # the head's Dropout p is a training setting (official 0.5), applied in both stages
    assert (
        build_stage(make_cfg(files, "backbone", tmp_path / "d", backbone_rotcam=True, rotcam_dropout=0.0), DistInfo())
        .module.rotcam_head[1]
        .p
        == 0.0
    )
    assert (
        build_stage(make_cfg(files, "hmr", tmp_path / "d2", rotcam_dropout=0.1), DistInfo())
        .module.mega.decoder.rotcam_head[3]
        .p
        == 0.1
    )
    assert mega.decoder.rotcam_head[1].p == 0.5
    with pytest.raises(ConfigError, match="rotcam_dropout must be in"):
        make_cfg(files, "hmr", tmp_path / "x", rotcam_dropout=1.0)
    with pytest.raises(ConfigError, match="backbone_rotcam is a setting of the backbone stage"):
        make_cfg(files, "hmr", tmp_path / "x", backbone_rotcam=True)
    # a checkpoint of another stage is refused with the file's name
    with pytest.raises(CheckpointError, match="tokenizer.pt.*not a backbone-stage checkpoint"):
        build_stage(make_cfg(files, "hmr", tmp_path / "hmr", backbone_weights=str(files / "tokenizer.pt")), DistInfo())
    # a tokenizer run with init_weights starts from that tokenizer, codebook included
    cont = build_stage(
        make_cfg(files, "tokenizer", tmp_path / "tok", init_weights=str(files / "tokenizer.pt")), DistInfo()
    )
    start = read_checkpoint(files / "tokenizer.pt")["model"]
    assert all(torch.equal(cont.module.state_dict()[k], v) for k, v in start.items())


def _vqhps_fixture(folder: Path, files: Path) -> Path:
    import cv2

    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"image_{i:05d}.jpg"), np.full((240, 320, 3), 40 * i, np.uint8))
    rng = np.random.default_rng(0)
    np.savez(folder / "3DPW_test.npz", imgname=np.array([f"image_{i:05d}.jpg" for i in range(3)]),
             center=np.full((3, 2), [160, 120], np.float32), scale=np.full(3, 200 / 180.0, np.float32),
             root_orient=np.tile(np.array([[np.pi, 0, 0]], np.float32), (3, 1)),
             pose_body=0.1 * rng.standard_normal((3, 63)).astype(np.float32), betas=np.zeros((3, 10), np.float32),
             gender=np.array(["male", "female", "male"]))  # fmt: skip
    return folder / "3DPW_test.npz"


def test_cli_rejects_bad_input_in_one_line(files, tmp_path):
    cfg_path = write_cfg(make_cfg(files, "pretrain", tmp_path / "run"), tmp_path / "pre.yaml")
    cases = [
        (("train", "hmr", "--config", str(cfg_path)), "is a config for stage 'pretrain'"),
        (("train", "pretrain", "--config", str(tmp_path / "missing.yaml")), "config file not found"),
        (("train", "pretrain", "--config", str(cfg_path), "--resume"), "nothing to resume"),
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: pretrain\nlearning_rate: 0.1\n")
    cases.append((("train", "pretrain", "--config", str(bad)), "unknown key(s) learning_rate"))
    no_tok = write_cfg(make_cfg(files, "pretrain", tmp_path / "run2", tokenizer_weights=""), tmp_path / "notok.yaml")
    cases.append((("train", "pretrain", "--config", str(no_tok)), "needs tokenizer_weights"))
    for args, message in cases:
        proc = cli(*args)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_an_hmr_run_continues_an_hmr_run_and_full_mask_prob_is_an_hmr_setting(files, tmp_path):
    from train.checkpoint import CheckpointError, read_checkpoint
    from train.config import ConfigError
    from train.loop import train
    from train.stages import build_stage

    metrics = train(
        make_cfg(files, "hmr", tmp_path / "first", steps=2, yaw_bins=8, full_mask_prob=0.3, pose_head_weight=10.0),
        progress=False,
    )
    assert metrics["final"]["pose_mm"] > 0 and metrics["final"]["pose_mm"] == pytest.approx(
        1000 * metrics["final"]["pose"], rel=1e-4
    )
    final = read_checkpoint(tmp_path / "first" / "final.pt")["model"]
    assert not any(k.startswith(("yaw_head", "pose_head")) for k in final)
    saved = read_checkpoint(tmp_path / "first" / "checkpoint.pt")["model"]
    # from final.pt: the whole MEGA (backbone, transformer, rotation/camera head)
    stage = build_stage(
        make_cfg(files, "hmr", tmp_path / "c1", init_weights=str(tmp_path / "first" / "final.pt")), DistInfo()
    )
    own = stage.module.mega.state_dict()
    assert set(own) == set(final) and all(torch.equal(own[k], v) for k, v in final.items())
    # from checkpoint.pt: MEGA and the train-only heads, which final.pt leaves out
    stage = build_stage(
        make_cfg(
            files,
            "hmr",
            tmp_path / "c2",
            yaw_bins=8,
            pose_head_weight=1.0,
            init_weights=str(tmp_path / "first" / "checkpoint.pt"),
        ),
        DistInfo(),
    )
    own = stage.module.state_dict()
    assert set(own) == set(saved) and all(torch.equal(own[k], v) for k, v in saved.items())
    assert any(k.startswith("pose_head.") for k in own) and any(k.startswith("yaw_head.") for k in own)
    # a run without the heads continues the same MEGA
    stage = build_stage(
        make_cfg(files, "hmr", tmp_path / "c2b", init_weights=str(tmp_path / "first" / "checkpoint.pt")), DistInfo()
    )
    assert stage.module.yaw_head is None and stage.module.pose_head is None
    assert all(torch.equal(stage.module.mega.state_dict()[k], v) for k, v in final.items())
    with pytest.raises(CheckpointError, match="yaw head has 8 bins, this run 4"):
        build_stage(
            make_cfg(files, "hmr", tmp_path / "c3", yaw_bins=4, init_weights=str(tmp_path / "first" / "checkpoint.pt")),
            DistInfo(),
        )
    with pytest.raises(CheckpointError, match="final.pt: continues a whole MEGA.*remove backbone_weights"):
        build_stage(
            make_cfg(
                files,
                "hmr",
                tmp_path / "c4",
                init_weights=str(tmp_path / "first" / "final.pt"),
                backbone_weights=str(tmp_path / "first" / "final.pt"),
            ),
            DistInfo(),
        )
    with pytest.raises(CheckpointError, match="tokenizer.pt: not a pre-training checkpoint"):
        build_stage(make_cfg(files, "hmr", tmp_path / "c5", init_weights=str(files / "tokenizer.pt")), DistInfo())
    bb = make_cfg(files, "backbone", tmp_path / "bb", steps=1)
    train(bb, progress=False)
    with pytest.raises(
        CheckpointError, match="a backbone-stage checkpoint; init_weights of hmr takes a pretrain or hmr"
    ):
        build_stage(make_cfg(files, "hmr", tmp_path / "c6", init_weights=str(tmp_path / "bb" / "final.pt")), DistInfo())
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="full_mask_prob must be in"):
            make_cfg(files, "hmr", tmp_path / "x", full_mask_prob=bad)
    with pytest.raises(ConfigError, match="full_mask_prob is a setting of the hmr stage"):
        make_cfg(files, "pretrain", tmp_path / "x", full_mask_prob=0.5)
    with pytest.raises(ConfigError, match="pose_head_weight must be >= 0"):
        make_cfg(files, "hmr", tmp_path / "x", pose_head_weight=-1.0)
    with pytest.raises(ConfigError, match="pose_head_weight is a setting of the hmr stage"):
        make_cfg(files, "backbone", tmp_path / "x", pose_head_weight=1.0)
