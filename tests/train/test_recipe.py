"""Recipes (train/recipe.py): the demo-weights recipe resolves to exactly the runs that made the shipped
weights, loading is strict with one-line errors, `--set` changes one run, `--dry-run` runs nothing, and a
recipe run skips finished steps and continues an interrupted one."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from click.testing import CliRunner

from realtime.cli import main
from tests.helpers import ROOT
from train.config import ConfigError, MeshVQVAEConfig, TrainConfig, config_to_dict
from train.detector import DetectorTrainConfig
from train.recipe import (
    EvalStep,
    PackageStep,
    SynthStep,
    TrainStep,
    load_recipe,
    plan,
    run,
)

RECIPE = ROOT / "configs" / "recipes" / "synthetic_demo.yaml"
RUNS = "runs/synthetic_demo"

# Every run of the demo weights, in order: the fields in which its config differs from the dataclass
# defaults (TrainConfig / DetectorTrainConfig), out_dir aside (RUNS/<step>).
DEMO_RUNS = {
    "tokenizer_1": {
        "steps": 2400,
        "weight_decay": 0.0,
        "warmup_steps": 50,
        "min_lr_ratio": 0.02,
        "clip_grad_norm": 0.0,
        "threads": 2,
        "checkpoint_every": 200,
        "log_every": 20,
        "dead_code_every": 20,
        "synthetic_meshes": 20000,
    },
    "tokenizer_2": {
        "init_weights": "runs/synthetic_demo/tokenizer_1/final.pt",
        "steps": 2000,
        "lr": 0.0005,
        "weight_decay": 0.0,
        "warmup_steps": 50,
        "min_lr_ratio": 0.02,
        "clip_grad_norm": 0.0,
        "threads": 2,
        "checkpoint_every": 200,
        "log_every": 20,
        "dead_code_every": 20,
        "synthetic_meshes": 20000,
    },
    "tokenizer_3": {
        "seed": 1,
        "init_weights": "runs/synthetic_demo/tokenizer_2/final.pt",
        "steps": 1800,
        "lr": 0.0003,
        "weight_decay": 0.0,
        "warmup_steps": 50,
        "min_lr_ratio": 0.02,
        "clip_grad_norm": 0.0,
        "threads": 2,
        "checkpoint_every": 200,
        "log_every": 20,
        "dead_code_every": 20,
        "synthetic_meshes": 20000,
    },
    "tokenizer_4": {
        "seed": 4,
        "init_weights": "runs/synthetic_demo/tokenizer_3/final.pt",
        "steps": 3600,
        "lr": 0.0004,
        "weight_decay": 0.0,
        "warmup_steps": 100,
        "min_lr_ratio": 0.02,
        "clip_grad_norm": 0.0,
        "threads": 1,
        "checkpoint_every": 200,
        "log_every": 20,
        "dead_code_every": 20,
        "synthetic_meshes": 20000,
    },
    "tokenizer_5": {
        "seed": 5,
        "init_weights": "runs/synthetic_demo/tokenizer_4/final.pt",
        "steps": 3000,
        "lr": 0.0003,
        "weight_decay": 0.0,
        "warmup_steps": 100,
        "min_lr_ratio": 0.02,
        "clip_grad_norm": 0.0,
        "threads": 2,
        "checkpoint_every": 200,
        "log_every": 20,
        "dead_code_every": 20,
        "synthetic_meshes": 20000,
    },
    "tokenizer_6": {
        "seed": 6,
        "init_weights": "runs/synthetic_demo/tokenizer_5/final.pt",
        "steps": 3600,
        "lr": 0.0003,
        "weight_decay": 0.0,
        "warmup_steps": 100,
        "min_lr_ratio": 0.02,
        "clip_grad_norm": 0.0,
        "threads": 1,
        "checkpoint_every": 200,
        "log_every": 20,
        "dead_code_every": 20,
        "synthetic_meshes": 20000,
    },
    "backbone_1": {
        "model_config": "mega_synthetic",
        "steps": 3000,
        "warmup_steps": 100,
        "min_lr_ratio": 0.01,
        "precision": "bf16",
        "threads": 1,
        "checkpoint_every": 250,
        "log_every": 50,
        "crop_dirs": ["runs/data/synth_train"],
    },
    "backbone_2": {
        "seed": 1,
        "model_config": "mega_synthetic",
        "init_weights": "runs/synthetic_demo/backbone_1/final.pt",
        "steps": 3000,
        "warmup_steps": 100,
        "min_lr_ratio": 0.01,
        "precision": "bf16",
        "threads": 1,
        "checkpoint_every": 250,
        "log_every": 50,
        "yaw_bins": 8,
        "yaw_loss_weight": 0.01,
        "crop_dirs": ["runs/data/synth_train"],
    },
    "pretrain": {
        "model_config": "mega_synthetic",
        "tokenizer_weights": "runs/synthetic_demo/tokenizer_6/final.pt",
        "steps": 1500,
        "batch_size": 64,
        "warmup_steps": 100,
        "min_lr_ratio": 0.01,
        "threads": 1,
        "checkpoint_every": 250,
        "log_every": 25,
        "synthetic_meshes": 8000,
    },
    "hmr_1": {
        "model_config": "mega_synthetic",
        "tokenizer_weights": "runs/synthetic_demo/tokenizer_6/final.pt",
        "init_weights": "runs/synthetic_demo/pretrain/final.pt",
        "backbone_weights": "runs/synthetic_demo/backbone_2/final.pt",
        "steps": 2500,
        "warmup_steps": 200,
        "min_lr_ratio": 0.01,
        "precision": "bf16",
        "threads": 1,
        "checkpoint_every": 250,
        "log_every": 50,
        "rotcam_dropout": 0.1,
        "yaw_bins": 8,
        "yaw_loss_weight": 0.5,
        "rotation_loss_weight": 2.0,
        "crop_dirs": ["runs/data/synth_train"],
    },
    "hmr_2": {
        "seed": 7,
        "model_config": "mega_synthetic",
        "tokenizer_weights": "runs/synthetic_demo/tokenizer_6/final.pt",
        "init_weights": "runs/synthetic_demo/hmr_1/checkpoint.pt",
        "steps": 3000,
        "lr": 0.0005,
        "warmup_steps": 100,
        "min_lr_ratio": 0.01,
        "precision": "bf16",
        "threads": 1,
        "checkpoint_every": 250,
        "log_every": 50,
        "full_mask_prob": 0.5,
        "rotcam_dropout": 0.1,
        "yaw_bins": 8,
        "yaw_loss_weight": 0.5,
        "rotation_loss_weight": 2.0,
        "crop_dirs": ["runs/data/synth_train"],
    },
    "hmr_3": {
        "seed": 8,
        "model_config": "mega_synthetic",
        "tokenizer_weights": "runs/synthetic_demo/tokenizer_6/final.pt",
        "init_weights": "runs/synthetic_demo/hmr_2/checkpoint.pt",
        "steps": 2500,
        "lr": 0.0005,
        "warmup_steps": 100,
        "min_lr_ratio": 0.01,
        "precision": "bf16",
        "threads": 1,
        "checkpoint_every": 250,
        "log_every": 50,
        "full_mask_prob": 0.8,
        "rotcam_dropout": 0.1,
        "yaw_bins": 8,
        "yaw_loss_weight": 0.5,
        "rotation_loss_weight": 2.0,
        "crop_dirs": ["runs/data/synth_train"],
    },
    "hmr_4": {
        "seed": 10,
        "model_config": "mega_synthetic",
        "tokenizer_weights": "runs/synthetic_demo/tokenizer_6/final.pt",
        "init_weights": "runs/synthetic_demo/hmr_3/checkpoint.pt",
        "steps": 1500,
        "lr": 0.0003,
        "warmup_steps": 100,
        "min_lr_ratio": 0.01,
        "precision": "bf16",
        "threads": 1,
        "checkpoint_every": 250,
        "log_every": 50,
        "full_mask_prob": 0.95,
        "rotcam_dropout": 0.1,
        "yaw_bins": 8,
        "yaw_loss_weight": 0.5,
        "rotation_loss_weight": 2.0,
        "crop_dirs": ["runs/data/synth_train"],
    },
    "hmr_5": {
        "seed": 12,
        "model_config": "mega_synthetic",
        "tokenizer_weights": "runs/synthetic_demo/tokenizer_6/final.pt",
        "init_weights": "runs/synthetic_demo/hmr_4/checkpoint.pt",
        "steps": 3000,
        "lr": 0.0003,
        "warmup_steps": 100,
        "min_lr_ratio": 0.01,
        "precision": "bf16",
        "threads": 1,
        "checkpoint_every": 250,
        "log_every": 50,
        "full_mask_prob": 0.95,
        "rotcam_dropout": 0.1,
        "yaw_bins": 8,
        "yaw_loss_weight": 0.5,
        "rotation_loss_weight": 2.0,
        "crop_dirs": ["runs/data/synth_train"],
    },
    "hmr_6": {
        "seed": 14,
        "model_config": "mega_synthetic",
        "tokenizer_weights": "runs/synthetic_demo/tokenizer_6/final.pt",
        "init_weights": "runs/synthetic_demo/hmr_5/checkpoint.pt",
        "steps": 3000,
        "lr": 0.0003,
        "warmup_steps": 100,
        "min_lr_ratio": 0.01,
        "precision": "bf16",
        "threads": 2,
        "checkpoint_every": 250,
        "log_every": 50,
        "full_mask_prob": 0.95,
        "rotcam_dropout": 0.1,
        "yaw_bins": 8,
        "yaw_loss_weight": 0.5,
        "rotation_loss_weight": 2.0,
        "crop_dirs": ["runs/data/synth_train"],
    },
    "detector": {"epochs": 20, "imgsz": 320},
}


def _as_dict(cfg) -> dict:
    return config_to_dict(cfg) if isinstance(cfg, TrainConfig) else dataclasses.asdict(cfg)


def test_demo_recipe_resolves_to_the_runs_of_the_demo_weights():
    recipe = load_recipe(RECIPE)
    runs = [s for s in recipe.steps if isinstance(s, TrainStep)]
    assert [s.name for s in runs] == list(DEMO_RUNS)
    for step in runs:
        defaults = _as_dict(DetectorTrainConfig() if step.stage == "detector" else TrainConfig(stage=step.stage))
        expected = {**defaults, "out_dir": f"{RUNS}/{step.name}", **DEMO_RUNS[step.name]}
        got = _as_dict(step.config)
        assert {k: (got[k], expected[k]) for k in got if got[k] != expected[k]} == {}, step.name


def test_demo_recipe_makes_its_data_measures_the_weights_and_packages_them():
    recipe = load_recipe(RECIPE)
    synth = {s.name: s for s in recipe.steps if isinstance(s, SynthStep)}
    assert (synth["synth_train"].out, synth["synth_train"].samples, synth["synth_train"].seed) == (
        "runs/data/synth_train",
        4000,
        1,
    )
    assert (synth["synth_test"].samples, synth["synth_test"].seed) == (300, 2)
    assert (synth["synth_detect"].synth, synth["synth_detect"].samples, synth["synth_detect"].size) == (
        "detection",
        800,
        "640x360",
    )
    # the runs read the data the recipe writes
    assert recipe.step("hmr_1").config.crop_dirs == (synth["synth_train"].out,)
    assert recipe.step("detector").config.data_dir == synth["synth_detect"].out
    ev = recipe.step("eval_hmr")
    assert isinstance(ev, EvalStep) and ev.weights == f"{RUNS}/hmr_6/final.pt" and ev.crops == ("runs/data/synth_test",)
    assert ev.samples == (1, 5, 10) and ev.mean_mesh_from == ("runs/data/synth_train",)
    package = recipe.steps[-1]
    assert isinstance(package, PackageStep) and package.package == "train/demo_weights"
    assert (package.tokenizer, package.mega) == (f"{RUNS}/tokenizer_6/final.pt", f"{RUNS}/hmr_6/final.pt")
    assert package.evals == ("eval_tokenizer", "eval_hmr")


def test_set_changes_one_run_and_references_follow_a_moved_output():
    recipe = load_recipe(RECIPE, ["hmr_6.steps=100", "hmr_5.out_dir=elsewhere/hmr_5", "eval_hmr.samples=[1, 2]"])
    assert recipe.step("hmr_6").config.steps == 100
    assert recipe.step("hmr_5").config.steps == 3000
    assert recipe.step("hmr_6").config.init_weights == "elsewhere/hmr_5/checkpoint.pt"
    assert recipe.step("eval_hmr").samples == (1, 2)
    assert (
        load_recipe(RECIPE, ["hmr_1.init_weights={tokenizer_1}/x.pt"]).step("hmr_1").config.init_weights
        == f"{RUNS}/tokenizer_1/x.pt"
    )
    threads = load_recipe(RECIPE, threads=2)
    assert {s.config.threads for s in threads.steps if isinstance(s, TrainStep)} == {2}


@pytest.mark.parametrize("text, message", [
    ("hmr_6.stepz=1", "step hmr_6 of .* has no field 'stepz'"),
    ("hmr_9.steps=1", "has no step 'hmr_9'"),
    ("hmr_6=1", "expected STEP.FIELD=VALUE"),
    ("hmr_6.steps=many", "step hmr_6: steps: expected an integer"),
    ("hmr_6.stage=tokenizer", "has no field 'stage'"),
    ("hmr_1.init_weights={hmr_6}/final.pt", "step hmr_1: init_weights: {hmr_6} names no step defined before"),
])  # fmt: skip
def test_a_bad_set_is_a_one_line_error(text, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_recipe(RECIPE, [text])
    assert "\n" not in str(e.value)


TOKENIZER_BASE = "configs/train_tokenizer_synthetic.yaml"


@pytest.mark.parametrize("steps, message", [
    ([{"name": "a", "train": "tokenizer", "config": TOKENIZER_BASE, "set": {"stepz": 3}}], "step a: set: stepz: not a field of the tokenizer"),
    ([{"name": "a", "train": "tokenizer", "config": TOKENIZER_BASE, "set": {"steps": "3"}}], "step a: steps: expected an integer"),
    ([{"name": "a", "train": "tokenizer", "config": TOKENIZER_BASE, "set": {"full_mask_prob": 0.5}}], "step a: full_mask_prob is a setting of the hmr stage"),
    ([{"name": "a", "train": "tokenise", "config": TOKENIZER_BASE}], "step a: unknown stage 'tokenise'"),
    ([{"name": "a", "train": "hmr", "config": TOKENIZER_BASE}], "step a: .* is a config of stage 'tokenizer', not 'hmr'"),
    ([{"name": "a", "train": "tokenizer", "config": "configs/absent.yaml"}], "step a: configs/absent.yaml: config file not found"),
    ([{"name": "a", "train": "tokenizer", "config": TOKENIZER_BASE, "seed": 1}], "step a: unknown key\\(s\\) seed"),
    ([{"name": "a", "train": "tokenizer", "config": TOKENIZER_BASE, "set": {"init_weights": "{b}/final.pt"}},
      {"name": "b", "train": "tokenizer", "config": TOKENIZER_BASE}], "step a: init_weights: {b} names no step defined before"),
    ([{"name": "a", "train": "tokenizer", "config": TOKENIZER_BASE}, {"name": "a", "train": "tokenizer", "config": TOKENIZER_BASE}], "step a: the name is used"),
    ([{"name": "a", "train": "tokenizer", "eval": "tokenizer", "config": TOKENIZER_BASE}], "step a: give exactly one of"),
    ([{"name": "a b", "train": "tokenizer", "config": TOKENIZER_BASE}], "step 1: name must be a word"),
    ([{"name": "d", "synth": "crops", "out": "x", "samples": "many"}], "step d: samples: expected an integer"),
    ([{"name": "d", "synth": "pictures", "out": "x", "samples": 3}], "step d: synth must be crops or detection"),
    ([{"name": "e", "eval": "hmr", "weights": "w.pt"}], "step e: eval hmr needs tokenizer and crops"),
    ([{"name": "e", "eval": "tokenizer", "weights": "w.pt", "sampels": [1]}], "step e: unknown key\\(s\\) sampels"),
    ([{"name": "p", "package": "out", "tokenizer": "t", "mega": "m", "evals": ["nothing"]}], "step p: evals: 'nothing' is not an eval step"),
])  # fmt: skip
def test_a_bad_recipe_is_a_one_line_error_naming_the_file_and_step(tmp_path, steps, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"runs": str(tmp_path / "runs"), "steps": steps}))
    with pytest.raises(ConfigError, match=message) as e:
        load_recipe(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, message", [
    ("runs: r\nsteps: []\n", "steps: expected a list of steps"),
    ("steps: [{name: a, synth: crops, out: x, samples: 1}]\n", "runs: expected the folder"),
    ("runs: r\nrun: r\nsteps: [{name: a, synth: crops, out: x, samples: 1}]\n", "unknown key\\(s\\) run"),
    ("runs: r\nruns: s\nsteps: [{name: a, synth: crops, out: x, samples: 1}]\n", "line 2: key 'runs' given twice"),
    ("runs: r\nsteps:\n  - {name: a, synth: crops, out: x, samples: 1, samples: 2}\n", "key 'samples' given twice"),
    ("runs: r\nsteps: [\n", "not valid YAML"),
])  # fmt: skip
def test_a_malformed_recipe_file_is_a_one_line_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_recipe(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_dry_run_prints_the_planned_runs_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe's outputs are relative: nothing may appear here
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    result = CliRunner().invoke(main, ["train", "--recipe", str(RECIPE), "--dry-run", "--set", "hmr_6.steps=100"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert (
        "[run] tokenizer_2: train tokenizer, config configs/train_tokenizer_synthetic.yaml, out_dir runs/synthetic_demo/tokenizer_2"
        in out
    )
    block = out[out.index("] hmr_6:") : out.index("] detector:")]
    assert "    steps: 100\n" in block and "    init_weights: runs/synthetic_demo/hmr_5/checkpoint.pt\n" in block
    assert "    full_mask_prob: 0.95\n" in block and "out_dir runs/synthetic_demo/hmr_6" in block
    assert "[skip] demo_weights: package train/demo_weights" in out  # only with --package
    assert "[run] synth_train: synth crops" in out and "[run] eval_hmr: eval hmr" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs"]


def test_recipe_cli_errors_are_one_line():
    runner = CliRunner()
    for args, message in ((["train", "--recipe", str(RECIPE), "--set", "hmr_6.stepz=1", "--dry-run"], "has no field 'stepz'"),
                          (["train", "hmr", "--recipe", str(RECIPE)], "--recipe runs its own steps"),
                          (["train", "hmr", "--config", TOKENIZER_BASE, "--dry-run"], "belong to --recipe"),
                          (["train"], "give STAGE --config FILE")):  # fmt: skip
        result = runner.invoke(main, args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output


# ---- running ----------------------------------------------------------------------------------------
TINY_MEGA = dict(
    name="mega_test_tiny", backbone="hrnet", hrnet_width=8, input_height=64, input_width=64, emb_dim=32,
    encoder_layers=1, encoder_heads=2, decoder_layers=1, decoder_heads=2, cond_length=4, cond_dim=120,
)  # fmt: skip


@pytest.fixture
def tiny_recipe(tmp_path, assets_dir):
    """A recipe on a tiny MEGA: pretrain, an hmr run from it, its evaluation, and the packaging."""
    from tests.train.fixtures import write_crop_fixture
    from train.checkpoint import save_checkpoint
    from train.model.mesh_vqvae import MeshVQVAE
    from train.synthetic import body as body_lib

    (tmp_path / "mega_tiny.yaml").write_text(yaml.safe_dump(TINY_MEGA))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tokenizer.pt", MeshVQVAE.from_assets(MeshVQVAEConfig(), assets_dir), MeshVQVAEConfig())
    write_crop_fixture(tmp_path / "crops", body_lib.load_rig(assets_dir), count=8)
    common = dict(model_config=str(tmp_path / "mega_tiny.yaml"), tokenizer_weights=str(tmp_path / "tokenizer.pt"), steps=2,
                  batch_size=4, warmup_steps=1, threads=1, checkpoint_every=1, log_every=1)  # fmt: skip
    for stage, extra in (("pretrain", {"synthetic_meshes": 8}), ("hmr", {"crop_dirs": [str(tmp_path / "crops")]})):
        (tmp_path / f"{stage}.yaml").write_text(yaml.safe_dump({"stage": stage, **common, **extra}))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"runs": str(tmp_path / "runs"), "steps": [
        {"name": "pre", "train": "pretrain", "config": str(tmp_path / "pretrain.yaml")},
        {"name": "hmr", "train": "hmr", "config": str(tmp_path / "hmr.yaml"), "set": {"init_weights": "{pre}/final.pt"}},
        {"name": "score", "eval": "hmr", "weights": "{hmr}/final.pt", "tokenizer": str(tmp_path / "tokenizer.pt"),
         "crops": [str(tmp_path / "crops")], "samples": [2], "batch": 4},
        {"name": "ship", "package": str(tmp_path / "shipped"), "tokenizer": str(tmp_path / "tokenizer.pt"), "mega": "{hmr}/final.pt",
         "evals": ["score"]},
    ]}, sort_keys=False))  # fmt: skip
    return path


def test_a_recipe_runs_in_order_skips_finished_steps_and_continues_an_interrupted_one(tiny_recipe):
    from train.checkpoint import read_checkpoint

    runs = tiny_recipe.parent / "runs"
    lines: list[str] = []
    run(load_recipe(tiny_recipe), progress=False, echo=lines.append)
    assert [line.split("]")[0] for line in lines] == ["[run", "[run", "[run", "[skip"]
    figures = json.loads((runs / "score.json").read_text())
    assert figures["samples"] == 8 and "det_pve" in figures and "q2_best_pve" in figures
    assert (runs / "hmr" / "config.yaml").read_text().startswith(f"# step hmr of {tiny_recipe}")
    assert read_checkpoint(runs / "hmr" / "final.pt")["train_config"]["init_weights"] == str(runs / "pre" / "final.pt")

    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    lines.clear()
    run(load_recipe(tiny_recipe), progress=False, echo=lines.append)
    assert [line.split("]")[0] for line in lines] == ["[done", "[done", "[done", "[skip"]
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == stamps

    # stopped after its last checkpoint, before final.pt: the run resumes, the eval runs again
    (runs / "hmr" / "final.pt").unlink()
    (runs / "score.json").unlink()
    recipe = load_recipe(tiny_recipe)
    assert [line.split("]")[0] for line in plan(recipe) if line.startswith("[")] == [
        "[done",
        "[resume",
        "[run",
        "[skip",
    ]
    run(recipe, progress=False, echo=lambda line: None)
    assert (runs / "hmr" / "final.pt").is_file() and json.loads((runs / "score.json").read_text()) == figures

    # --package: float16 copies, measured again, and a manifest that says what they are
    assert not (tiny_recipe.parent / "shipped").exists()
    run(load_recipe(tiny_recipe), package=True, progress=False, echo=lambda line: None)
    shipped = tiny_recipe.parent / "shipped"
    manifest = json.loads((shipped / "manifest.json").read_text())
    assert manifest["source"]["mega.pt"] == str(runs / "hmr" / "final.pt")
    assert manifest["eval"]["hmr"] == figures and manifest["eval"]["hmr_demo_fp16"]["samples"] == 8
    assert "hmr_det_pve_le_half_mean_mesh" not in manifest["targets"]  # this eval has no mean-mesh baseline
    for name, record in manifest["files"].items():
        assert record["bytes"] == (shipped / name).stat().st_size
        assert read_checkpoint(shipped / name)["stored_dtype"] == "float16"
    assert not [p for p in shipped.iterdir() if "partial" in p.name]

    # a finished run trained with another config is not taken for this step's
    with pytest.raises(ConfigError, match=r"pre/final.pt: trained with another config than step pre \(lr\)"):
        run(load_recipe(tiny_recipe, ["pre.lr=0.5"]), progress=False, echo=lambda line: None)
