"""The shipped configs hold the official values, and the loader is strict about keys and types."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT
from train.config import (
    CONFIG_DIR,
    ConfigError,
    MegaConfig,
    MeshVQVAEConfig,
    builtin_config,
    config_from_dict,
    config_hash,
    config_to_dict,
    load_config,
)

YAMLS = sorted((ROOT / "configs").glob("*.yaml"))


def _cls_for(path: Path):
    from train.config import TrainConfig
    from train.detector import DetectorTrainConfig

    if path.stem.startswith("train_detector"):  # the demo's YOLO (train/detector.py)
        return DetectorTrainConfig
    if path.stem.startswith("train_"):  # training runs (train/loop.py)
        return TrainConfig
    return MeshVQVAEConfig if path.stem == "mesh_vqvae" else MegaConfig


def _write(tmp_path: Path, data: dict | str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_config_dir_is_the_repo_configs_folder():
    assert CONFIG_DIR == ROOT / "configs"
    assert {p.stem for p in YAMLS} >= {"mega_hrnet", "mega_resnet", "mega_vit", "mesh_vqvae"}


def test_configs_hold_the_models_one_base_config_per_stage_and_the_recipes():
    assert {p.stem for p in YAMLS} == {
        "mega_hrnet", "mega_resnet", "mega_vit", "mega_synthetic", "mega_tiny", "mesh_vqvae",
        *(f"train_{stage}_synthetic" for stage in ("tokenizer", "backbone", "pretrain", "hmr", "detector")),
    }  # fmt: skip
    assert {
        p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*") if p.is_file() and p.parent != CONFIG_DIR
    } == {"recipes/synthetic_demo.yaml"}


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_every_shipped_yaml_loads_into_its_dataclass(path):
    assert path.stem.startswith(("mega_", "train_")) or path.stem == "mesh_vqvae", f"no dataclass known for {path.name}"
    cfg = load_config(path, _cls_for(path))
    assert isinstance(cfg, _cls_for(path))
    # Every key is spelled out in the file: the file, not a default, says what the model is.
    assert set(yaml.safe_load(path.read_text())) <= set(config_to_dict(cfg))


@pytest.mark.parametrize(
    "name, backbone, cond_dim, cond_length, input_hw",
    [
        ("mega_hrnet", "hrnet", 720, 49, (224, 224)),
        ("mega_resnet", "resnet", 2048, 49, (224, 224)),
        ("mega_vit", "vit", 1280, 192, (256, 192)),
    ],
)
def test_mega_configs_hold_official_values(name, backbone, cond_dim, cond_length, input_hw):
    cfg = builtin_config(name, MegaConfig)
    assert cfg.name == name and cfg.backbone == backbone
    assert (cfg.cond_dim, cfg.cond_length) == (cond_dim, cond_length)
    assert (cfg.input_height, cfg.input_width) == input_hw
    assert cfg.emb_dim == 1024
    assert (cfg.encoder_layers, cfg.decoder_layers) == (12, 4)
    assert (cfg.encoder_heads, cfg.decoder_heads) == (4, 4)
    assert (cfg.seq_length, cfg.num_embeddings, cfg.dim_tokens) == (54, 512, 512)
    assert cfg.cond_dropout == 0.0
    assert isinstance(cfg.layer_norm_eps, float) and cfg.layer_norm_eps == pytest.approx(1e-5)
    assert cfg.crop_focal_length == 1000.0


def test_backbone_specific_values():
    assert builtin_config("mega_hrnet", MegaConfig).hrnet_width == 48
    resnet = builtin_config("mega_resnet", MegaConfig)
    assert resnet.resnet_blocks == (3, 4, 6, 3) and isinstance(resnet.resnet_blocks, tuple)
    assert (resnet.steps, resnet.temperature) == (2, 10.0)  # paper: ResNet T=2 A=10
    hrnet = builtin_config("mega_hrnet", MegaConfig)
    assert (hrnet.steps, hrnet.temperature) == (5, 1.0)  # paper: HRNet T=5 A=1
    vit = builtin_config("mega_vit", MegaConfig)
    assert (vit.vit_embed_dim, vit.vit_depth, vit.vit_heads, vit.vit_patch) == (1280, 32, 16, 16)
    # 256x192 input, 16-pixel patches -> 16x12 image tokens
    assert (vit.input_height // vit.vit_patch) * (vit.input_width // vit.vit_patch) == vit.cond_length


def test_hrnet_yaml_matches_dataclass_defaults():
    assert builtin_config("mega_hrnet", MegaConfig) == MegaConfig()


def test_mesh_vqvae_holds_official_values():
    cfg = builtin_config("mesh_vqvae", MeshVQVAEConfig)
    assert cfg.name == "mesh_vqvae_54"
    assert cfg.connection_layers == (
        "pool0",
        "pool1",
        "pool2",
        "pool3",
        "pool4",
        "pool5",
        "pool6",
        "unpool6",
        "unpool5",
        "unpool4",
        "unpool3",
        "unpool2",
        "unpool1",
        "unpool0",
    )
    assert cfg.channels == (32, 32, 64, 64, 128, 128, 9, 128, 128, 64, 64, 32, 32, 3)
    assert cfg.weight_num == (9, 0, 9, 0, 9, 0, 9, 9, 0, 9, 0, 9, 0, 9)
    assert cfg.residual_rate == (0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0)
    assert all(isinstance(r, float) for r in cfg.residual_rate)  # ints in YAML, floats in the config
    assert (cfg.num_embeddings, cfg.embedding_dim) == (512, 9)
    assert (cfg.commitment_cost, cfg.decay) == (0.25, 0.99)
    assert cfg == MeshVQVAEConfig()


# --- strictness ----------------------------------------------------------------------------------


def test_unknown_key_names_file_and_key(tmp_path):
    p = _write(tmp_path, {"name": "x", "emb_dmi": 1024}, "typo.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(p, MegaConfig)
    msg = str(e.value)
    assert str(p) in msg and "emb_dmi" in msg


@pytest.mark.parametrize(
    "key, value, cls",
    [
        ("emb_dim", "1024", MegaConfig),  # string for int
        ("emb_dim", True, MegaConfig),  # bool for int
        ("emb_dim", 1024.0, MegaConfig),  # float for int
        ("emb_dim", None, MegaConfig),  # empty value
        ("temperature", "hot", MegaConfig),  # string for float
        ("temperature", False, MegaConfig),  # bool for float
        ("name", 3, MegaConfig),  # int for str
        ("resnet_blocks", 3, MegaConfig),  # scalar for list
        ("resnet_blocks", [3, 4, "6", 3], MegaConfig),  # wrong element type
        ("channels", [32.5] * 14, MeshVQVAEConfig),  # float elements for ints
    ],
)
def test_wrong_type_is_config_error_naming_file_and_key(tmp_path, key, value, cls):
    p = _write(tmp_path, {key: value}, "bad.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(p, cls)
    msg = str(e.value)
    assert str(p) in msg and key in msg


def test_int_is_accepted_where_float_is_expected(tmp_path):
    cfg = load_config(_write(tmp_path, {"temperature": 2, "crop_focal_length": 500}), MegaConfig)
    assert cfg.temperature == 2.0 and isinstance(cfg.temperature, float)
    assert isinstance(cfg.crop_focal_length, float)


def test_dataclass_validation_errors_name_the_file(tmp_path):
    p = _write(tmp_path, {"backbone": "swin"}, "bb.yaml")
    with pytest.raises(ConfigError, match="backbone") as e:
        load_config(p, MegaConfig)
    assert str(p) in str(e.value)
    with pytest.raises(ConfigError, match="channels"):
        load_config(_write(tmp_path, {"channels": [32, 32]}), MeshVQVAEConfig)
    with pytest.raises(ConfigError, match="divisible"):
        config_from_dict(MegaConfig, {"emb_dim": 1023})


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "emb_dim: [1\n"])
def test_non_mapping_or_broken_yaml_is_config_error(tmp_path, text):
    p = _write(tmp_path, text, "odd.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(p, MegaConfig)
    assert str(p) in str(e.value)


def test_a_key_given_twice_is_config_error_naming_the_line(tmp_path):
    p = _write(tmp_path, "emb_dim: 1024\nsteps: 5\nemb_dim: 512\n", "twice.yaml")
    with pytest.raises(ConfigError, match="line 3: key 'emb_dim' given twice") as e:
        load_config(p, MegaConfig)
    assert str(p) in str(e.value)


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml", MegaConfig)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(_write(tmp_path, ""), MegaConfig) == MegaConfig()


# --- frozen, hash, round trip --------------------------------------------------------------------


@pytest.mark.parametrize("cls, field", [(MegaConfig, "emb_dim"), (MeshVQVAEConfig, "channels")])
def test_configs_are_frozen(cls, field):
    cfg = cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, field, 1)
    assert all(not isinstance(v, list) for v in vars(cfg).values())  # no mutable lists inside either


def test_config_hash_is_stable_and_tracks_every_field():
    cfg = builtin_config("mega_hrnet", MegaConfig)
    h = config_hash(cfg)
    assert h == config_hash(builtin_config("mega_hrnet", MegaConfig)) == config_hash(MegaConfig())
    assert len(h) == 16 and int(h, 16) >= 0
    assert config_hash(dataclasses.replace(cfg, emb_dim=512)) != h
    assert config_hash(dataclasses.replace(cfg, layer_norm_eps=1e-6)) != h
    assert config_hash(dataclasses.replace(cfg, name="other")) != h
    # different classes never collide, even with no fields changed
    assert config_hash(MeshVQVAEConfig()) != h


def test_config_hash_is_the_same_in_another_process():
    code = (
        "from train.config import MegaConfig, MeshVQVAEConfig, builtin_config, config_hash;"
        "print(config_hash(builtin_config('mega_vit', MegaConfig)), config_hash(MeshVQVAEConfig()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    expected = f"{config_hash(builtin_config('mega_vit', MegaConfig))} {config_hash(MeshVQVAEConfig())}"
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_round_trip_dict_json_yaml(path, tmp_path):
    cls = _cls_for(path)
    cfg = load_config(path, cls)
    d = config_to_dict(cfg)
    assert config_from_dict(cls, d) == cfg
    # what checkpoints and engine manifests store: plain JSON / YAML
    assert config_from_dict(cls, json.loads(json.dumps(d))) == cfg
    assert load_config(_write(tmp_path, d, "rt.yaml"), cls) == cfg
    assert config_hash(config_from_dict(cls, d)) == config_hash(cfg)


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    # PyYAML reads `1e-5` as a string (YAML 1.1); a float field accepts it, a non-number stays an error
    from train.config import ConfigError, MegaConfig, load_config

    p = tmp_path / "c.yaml"
    p.write_text("layer_norm_eps: 1e-5\n")
    assert load_config(p, MegaConfig).layer_norm_eps == 1e-5
    p.write_text("layer_norm_eps: small\n")
    with pytest.raises(ConfigError, match="layer_norm_eps"):
        load_config(p, MegaConfig)


def test_sizes_are_read_once_for_configs_recipes_and_the_cli():
    from train.config import parse_size

    assert parse_size("1280x720") == (1280, 720) and parse_size("641X359") == (641, 359)
    for bad in ("1280", "8x8", "axb", "1280x720x3", ""):
        with pytest.raises(ConfigError, match="expected WxH"):
            parse_size(bad)
