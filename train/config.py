"""Frozen dataclass configs, loaded strictly from flat YAML.

One YAML file holds one dataclass. Unknown keys, missing YAML structure and wrong types are errors
that name the file and the key: a typo in a config must never silently fall back to a default.
Every checkpoint and engine manifest embeds `config_to_dict(cfg)` so an artefact says what it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config file or dict that does not match its dataclass."""


@dataclass(frozen=True)
class MegaConfig:
    """The MEGA network (CVQMAE in the official code) and its inference defaults."""

    name: str = "mega_hrnet"
    backbone: str = "hrnet"  # hrnet | resnet | vit
    # backbone shape parameters (only the chosen backbone's are used)
    hrnet_width: int = 48
    resnet_blocks: tuple[int, ...] = (3, 4, 6, 3)
    vit_embed_dim: int = 1280
    vit_depth: int = 32
    vit_heads: int = 16
    vit_patch: int = 16
    input_height: int = 224
    input_width: int = 224
    # token transformer
    seq_length: int = 54
    num_embeddings: int = 512
    emb_dim: int = 1024
    encoder_layers: int = 12
    encoder_heads: int = 4
    decoder_layers: int = 4
    decoder_heads: int = 4
    dim_tokens: int = 512
    cond_length: int = 49
    cond_dim: int = 720
    cond_dropout: float = 0.0
    # timm 1.0.15 (the version the official weights were trained with) defaults to 1e-5
    layer_norm_eps: float = 1e-5
    # stochastic mode defaults (paper: HRNet T=5 A=1, ResNet T=2 A=10)
    steps: int = 5
    temperature: float = 1.0
    # crop camera: focal length in pixels for a crop of `input_width` (official demo: 1000 at 224)
    crop_focal_length: float = 1000.0

    def __post_init__(self) -> None:
        if self.backbone not in ("hrnet", "resnet", "vit"):
            raise ConfigError(f"backbone must be hrnet, resnet or vit, got {self.backbone!r}")
        if self.emb_dim % self.encoder_heads or self.emb_dim % self.decoder_heads:
            raise ConfigError("emb_dim must be divisible by the number of heads")


@dataclass(frozen=True)
class MeshVQVAEConfig:
    """The Mesh-VQ-VAE tokenizer (official `config_medium`: 6890 vertices -> 54 tokens of 9 dims)."""

    name: str = "mesh_vqvae_54"
    connection_layers: tuple[str, ...] = (
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
    channels: tuple[int, ...] = (32, 32, 64, 64, 128, 128, 9, 128, 128, 64, 64, 32, 32, 3)
    weight_num: tuple[int, ...] = (9, 0, 9, 0, 9, 0, 9, 9, 0, 9, 0, 9, 0, 9)
    residual_rate: tuple[float, ...] = (0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0)
    num_embeddings: int = 512
    embedding_dim: int = 9
    commitment_cost: float = 0.25
    decay: float = 0.99

    def __post_init__(self) -> None:
        n = len(self.connection_layers)
        for field in ("channels", "weight_num", "residual_rate"):
            if len(getattr(self, field)) != n:
                raise ConfigError(f"{field} must have one entry per connection layer ({n})")


def _check_type(value, hint, where: str):
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        inner = args[0]
        return tuple(_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _check_type(value, args[0], where)
    if hint is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads `1e-5` without a dot as a string; accept what is clearly a number
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {hint}")


def config_from_dict(cls, data: dict, source: str = "<dict>"):
    """Build `cls` from a flat dict; unknown keys and wrong types are errors naming `source`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a flat mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} for {cls.__name__} (valid: {', '.join(sorted(names))})"
        )
    kwargs = {k: _check_type(v, hints[k], f"{source}: {k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_yaml(path: str | Path, what: str = "config"):
    """The data of a YAML file, read safely; a key given twice in one mapping is an error (PyYAML would
    keep the last one silently, so one of the two values a file states would never be used)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` brings defaults, overridden here
                continue
            key = loader.construct_object(key_node)
            if key in seen:
                raise ConfigError(f"{path}: line {key_node.start_mark.line + 1}: key {key!r} given twice")
            seen.add(key)
        return loader.construct_mapping(node)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return yaml.load(path.read_text(), Loader=StrictLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def load_config(path: str | Path, cls):
    """Load one flat YAML file into the frozen dataclass `cls`."""
    data = load_yaml(path)
    if data is None:
        data = {}
    return config_from_dict(cls, data, str(path))


def builtin_config(name: str, cls):
    """A config shipped in `configs/` by name (e.g. 'mega_hrnet')."""
    return load_config(CONFIG_DIR / f"{name}.yaml", cls)


def parse_size(text: str, min_side: int = 16) -> tuple[int, int]:
    """'1280x720' -> (1280, 720): the one reader of WxH sizes (configs, recipes and the CLI); a
    ConfigError naming the text otherwise."""
    try:
        w, h = (int(p) for p in text.lower().split("x"))
    except ValueError:
        w = h = 0
    if w < min_side or h < min_side:
        raise ConfigError(f"size {text!r}: expected WxH of at least {min_side} pixels, like 1280x720")
    return w, h


def config_to_dict(cfg) -> dict:
    """Plain JSON/YAML-serialisable dict (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def config_hash(cfg) -> str:
    """Stable short hash of a config, used to key engines and caches."""
    blob = json.dumps({"type": type(cfg).__name__, **config_to_dict(cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- training ----------------------------------------------------------------------------------
TRAIN_STAGES = ("tokenizer", "backbone", "pretrain", "hmr")


@dataclass(frozen=True)
class TrainConfig:
    """One training run of one stage (`mega-rt train STAGE --config FILE`); see train/stages.py.

    Models are named, not inlined: `model_config` / `tokenizer_config` are a shipped config name
    (configs/<name>.yaml) or a YAML path, so the network a run trains is the one its file says.
    Sizes are *global*: `batch_size` samples per optimiser step, whatever the number of processes and
    `grad_accum` (each process runs batch_size / (world * grad_accum) per micro-step).
    """

    stage: str = "hmr"  # tokenizer | backbone | pretrain | hmr
    out_dir: str = "runs/hmr"
    seed: int = 0
    # models
    model_config: str = "mega_hrnet"  # MegaConfig of the pretrain / hmr network
    tokenizer_config: str = "mesh_vqvae"  # MeshVQVAEConfig
    tokenizer_weights: str = ""  # trained tokenizer (pretrain, hmr: meshes -> target tokens)
    # hmr: the pre-trained token model (PretrainModel checkpoint) to start from, or an hmr run (its final.pt,
    # or its checkpoint.pt to keep its train-only heads too) or a full MEGA checkpoint to continue with a
    # fresh schedule; tokenizer: a tokenizer
    # checkpoint to continue from with a fresh schedule (codebook and its EMA statistics included);
    # backbone: a backbone-stage final.pt to continue from (its rotation/camera head too, when both have one)
    init_weights: str = ""
    # hmr: a `backbone` stage's final.pt (HRNet pre-trained on 2D joint heatmaps) to start the backbone from
    backbone_weights: str = ""
    # optimisation (paper: AdamW (0.9, 0.99), weight decay 0.05, base lr 1e-3, cosine with warm-up)
    steps: int = 10000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    # 0: `lr` is the learning rate. N > 0: `lr` is a base rate per N samples and the run uses
    # lr * batch_size / N (the official code scales its 1e-3 by batch / 256).
    lr_reference_batch: int = 0
    betas: tuple[float, ...] = (0.9, 0.99)
    weight_decay: float = 0.05
    warmup_steps: int = 500
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    clip_grad_norm: float = 1.0  # 0 disables clipping
    backbone_lr_scale: float = 1.0  # hmr: the backbone's lr relative to the transformer's
    vit_trainable_blocks: int = 0  # hmr with a ViT: fine-tune only the last N blocks (+ last norm); 0 = all
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads per process (0: torch's default)
    workers: int = 0  # DataLoader worker processes per training process
    # checkpoints and logs
    checkpoint_every: int = 500
    log_every: int = 10
    # losses
    vertex_loss_weight: float = 1.0  # tokenizer: mean per-vertex Euclidean distance (metres)
    token_loss_weight: float = 1.0
    # hmr: share of samples with every mesh token masked (train/masking.py). 0 is the paper's schedule, which
    # almost never masks all N (1 sample in 5000), although all-masked is what deterministic inference sees
    full_mask_prob: float = 0.0
    heatmap_sigma: float = 0.05  # backbone: std of a joint's target heatmap, as a fraction of the heatmap width
    backbone_rotcam: bool = False  # backbone: also train MEGA's rotation/camera head (hmr starts from it)
    rotcam_dropout: float = 0.5  # hmr / backbone_rotcam: p of the rotation/camera head's two Dropouts (official 0.5)
    # backbone / hmr: a train-only head classifies the body's yaw (train/geometry.py yaw_of_rotation) into this
    # many bins from the pooled MEGA features, so that the features must say which way the body faces (0: off)
    yaw_bins: int = 0
    yaw_loss_weight: float = 1.0
    # hmr: a train-only MLP regresses the root-relative canonical joints from MEGA's image feature grid, with
    # this weight on its mean joint distance in metres (0: off), so that the grid the decoder reads holds the pose
    pose_head_weight: float = 0.0
    rotation_loss_weight: float = 1.0
    camera_loss_weight: float = 1.0
    dead_code_every: int = 100  # tokenizer: restart unused codes every N steps, from step 0 (0: never)
    # a code whose EMA usage (assignments per step) falls under this is dead; a restarted code starts at
    # 1.0, so it has ~70 steps at decay 0.99 to be chosen before it is moved again
    dead_code_threshold: float = 0.5
    # data: mesh sources (tokenizer, pretrain)
    synthetic_meshes: int = 0  # posed synthetic bodies (train/synthetic/body.py), generated once from the seed
    amass_dir: str = ""  # folder of AMASS / BEDLAM SMPL animation npz files
    amass_stride: int = 1  # keep every N-th frame
    smpl_model: str = ""  # SMPL model file or folder (.pkl / .npz, the smplx layout)
    # data: image sources (hmr)
    crop_dirs: tuple[str, ...] = ()  # synthetic crop datasets written by `mega-rt synth --dataset`
    hmr_npz: tuple[str, ...] = ()  # CLIFF/BEDLAM-style annotation files (imgname, center, scale, pose, shape, ...)
    image_dirs: tuple[str, ...] = ()  # image root of each hmr_npz file (same order)
    mix_ratios: tuple[float, ...] = ()  # share of each source (crop_dirs first, then hmr_npz); () = by size
    # augmentation (hmr; SPIN / official MEGA defaults)
    aug_scale: float = 0.25  # box scale factor in [1 - s, 1 + s]
    aug_rotation_deg: float = 30.0  # in-plane rotation: N(0, r) clipped to +-2r ...
    aug_rotation_prob: float = 0.4  # ... applied with this probability
    aug_flip_prob: float = 0.5
    aug_color: float = 0.4  # per-channel gain in [1 - c, 1 + c]

    def __post_init__(self) -> None:
        if self.stage not in TRAIN_STAGES:
            raise ConfigError(f"stage must be one of {', '.join(TRAIN_STAGES)}, got {self.stage!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.heatmap_sigma <= 0.5:
            raise ConfigError(
                f"heatmap_sigma must be in (0, 0.5] (a fraction of the heatmap width), got {self.heatmap_sigma}"
            )
        if not 0.0 <= self.rotcam_dropout < 1.0:
            raise ConfigError(f"rotcam_dropout must be in [0, 1), got {self.rotcam_dropout}")
        if self.init_weights and self.stage == "pretrain":
            raise ConfigError("init_weights is not used by the pretrain stage (it starts from scratch); remove it")
        if not 0.0 <= self.full_mask_prob < 1.0:
            raise ConfigError(f"full_mask_prob must be in [0, 1), got {self.full_mask_prob}")
        if self.full_mask_prob and self.stage != "hmr":
            raise ConfigError(f"full_mask_prob is a setting of the hmr stage, not of {self.stage!r}")
        if self.pose_head_weight < 0:
            raise ConfigError(f"pose_head_weight must be >= 0 (0: off), got {self.pose_head_weight}")
        if self.pose_head_weight and self.stage != "hmr":
            raise ConfigError(f"pose_head_weight is a setting of the hmr stage, not of {self.stage!r}")
        if self.yaw_bins < 0 or self.yaw_bins == 1:
            raise ConfigError(f"yaw_bins must be 0 (off) or >= 2, got {self.yaw_bins}")
        if self.yaw_bins and self.stage not in ("backbone", "hmr"):
            raise ConfigError(f"yaw_bins is a setting of the backbone and hmr stages, not of {self.stage!r}")
        if self.backbone_rotcam and self.stage != "backbone":
            raise ConfigError(f"backbone_rotcam is a setting of the backbone stage, not of {self.stage!r}")
        if len(self.betas) != 2:
            raise ConfigError(f"betas must be two numbers, got {list(self.betas)}")
        if self.hmr_npz and len(self.image_dirs) != len(self.hmr_npz):
            raise ConfigError(
                f"image_dirs needs one folder per hmr_npz file ({len(self.hmr_npz)}), got {len(self.image_dirs)}"
            )
        image_stage = self.stage in ("backbone", "hmr")
        sources = len(self.crop_dirs) + len(self.hmr_npz) if image_stage else 0
        if self.mix_ratios and image_stage and len(self.mix_ratios) != sources:
            raise ConfigError(
                f"mix_ratios needs one share per source ({sources}: crop_dirs then hmr_npz), got {len(self.mix_ratios)}"
            )
