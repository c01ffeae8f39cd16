"""Strict checkpoint loading (official and our own formats) and atomic saving.

Official files (Zenodo record 14974141) are `{"model": state_dict, "loss": float}`, sometimes with every
key prefixed `module.` (DistributedDataParallel). Ours add `"config"` and `"config_type"`, so an artefact
says what it is. Loading is strict: a missing, unexpected or misshaped key is an error naming it (the
official loader's `strict=False` hides such mistakes).
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from train.config import MegaConfig, MeshVQVAEConfig, builtin_config, config_from_dict, config_to_dict
from train.io import atomic_write

FORMAT = "mega-rt/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used as asked; the message names the file and the fix."""


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file safely (weights_only) -> {"model": state_dict, ...}."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # torch.save writes a zip archive (or, before 1.6, a pickle)
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (it starts with {head!r}, not the zip or pickle header torch.save writes)"
        )
    try:
        with warnings.catch_warnings():  # a plain pickle of another protocol: the refusal below says enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses a global: the file asks to run code to load
        found = re.search(r"GLOBAL (\S+)", str(e))
        raise CheckpointError(
            f"{path}: refused: loading it would run {found.group(1) if found else 'code'} (a checkpoint of "
            "tensors never needs to); re-save its state dict with torch.save(model.state_dict(), ...)"
        ) from None
    except Exception as e:  # truncated zip, foreign types
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}{': ' + first[:160] if first else ''})"
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        ckpt = dict(obj)
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        ckpt = {"model": obj}
    else:
        raise CheckpointError(f"{path}: expected {{'model': state_dict, ...}} or a bare state dict")
    ckpt["model"] = strip_prefix(ckpt["model"])
    ckpt["path"] = str(path)
    return ckpt


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Remove a DistributedDataParallel prefix when every key carries it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def check_keys(expected: dict[str, torch.Size], given: dict, source: str, what: str) -> None:
    """Raise CheckpointError listing missing / unexpected / misshaped keys (first few of each)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    misshaped = [
        f"{k} {tuple(given[k].shape)} != {tuple(expected[k])}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k])
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    if problems:
        raise CheckpointError(f"{source}: does not match {what} — " + "; ".join(problems))


def copy_matching(own: dict[str, torch.Tensor], given: dict, source: str, what: str, fix: str,
                  required=None) -> int:  # fmt: skip
    """Copy the tensors of `given` into the matching tensors of `own` (a module's `state_dict()`, or part
    of one): the one partial loader, for a run that starts from part of another network.

    Every key of `given` must name a tensor of `own` of the same shape, and every key of `required`
    (default: all of `own`) must be given; otherwise a CheckpointError "`source`: `what` (N keys differ,
    e.g. KEY); `fix`". Returns the number of tensors copied."""
    required = own if required is None else required
    bad = sorted(k for k in given if k not in own) + sorted(k for k in required if k not in given)
    bad += [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in given.items()
        if k in own and own[k].shape != v.shape
    ]
    if bad:
        raise CheckpointError(f"{source}: {what} ({len(bad)} keys differ, e.g. {bad[0]}); {fix}")
    with torch.no_grad():
        for k, v in given.items():
            own[k].copy_(v)
    return len(given)


def load_strict(module: torch.nn.Module, state_dict: dict, source: str, what: str | None = None) -> None:
    expected = {k: v.shape for k, v in module.state_dict().items()}
    check_keys(expected, state_dict, source, what or type(module).__name__)
    module.load_state_dict(state_dict, strict=True)


def infer_mega_config(state_dict: dict) -> MegaConfig:
    """The shipped config of an official MEGA state dict's backbone, with the sizes its tensors show.

    Official files carry no config. The released ones have the shipped sizes; a smaller network saved
    the official way (the same code at another width or depth) gets its widths and depths from the
    shapes. Head counts do not show in any shape and stay the shipped config's."""
    if "backbone.pos_embed" in state_dict:
        name = "mega_vit"
    elif "backbone.0.weight" in state_dict:
        name = "mega_resnet"
    elif "backbone.conv1.weight" in state_dict:
        name = "mega_hrnet"
    else:
        raise CheckpointError("cannot tell the backbone from the checkpoint keys")
    cfg = builtin_config(name, MegaConfig)
    sizes = transformer_sizes(state_dict)
    if cfg.backbone == "hrnet" and "backbone.transition1.0.0.weight" in state_dict:
        sizes["hrnet_width"] = int(state_dict["backbone.transition1.0.0.weight"].shape[0])
    elif cfg.backbone == "resnet":
        sizes["resnet_blocks"] = tuple(_count_indexed(state_dict, f"backbone.{stage}.") for stage in (4, 5, 6, 7))
    elif cfg.backbone == "vit" and "backbone.patch_embed.proj.weight" in state_dict:
        patch = state_dict["backbone.patch_embed.proj.weight"].shape
        sizes.update(vit_embed_dim=int(patch[0]), vit_patch=int(patch[-1]),
                     vit_depth=_count_indexed(state_dict, "backbone.blocks."))  # fmt: skip
        if sizes["vit_embed_dim"] % cfg.vit_heads:
            sizes["vit_heads"] = 1  # the head count cannot be read; one head still computes the same shapes
    if "decoder.cond_emb.weight" in state_dict:
        sizes["cond_dim"] = int(state_dict["decoder.cond_emb.weight"].shape[1])
    return _with_sizes(cfg, sizes)


def transformer_sizes(state_dict: dict) -> dict:
    """emb_dim, seq_length, num_embeddings, dim_tokens and layer counts read from the token transformer's
    tensors (MEGA and the pre-training model share them)."""
    sizes = {}
    if "encoder.pos_embedding" in state_dict:
        seq, _, emb = state_dict["encoder.pos_embedding"].shape
        sizes.update(seq_length=int(seq), emb_dim=int(emb))
    if "encoder.proj.weight" in state_dict:
        sizes["num_embeddings"] = int(state_dict["encoder.proj.weight"].shape[0])
    if "decoder.head.weight" in state_dict:
        sizes["dim_tokens"] = int(state_dict["decoder.head.weight"].shape[0])
    for part in ("encoder", "decoder"):
        n = _count_indexed(state_dict, f"{part}.transformer.")
        if n:
            sizes[f"{part}_layers"] = n
    return sizes


def _count_indexed(state_dict: dict, prefix: str) -> int:
    """How many sub-modules `prefix0.`, `prefix1.`, ... the keys name."""
    idx = {k[len(prefix) :].split(".", 1)[0] for k in state_dict if k.startswith(prefix)}
    return len([i for i in idx if i.isdigit()])


def _with_sizes(cfg: MegaConfig, sizes: dict) -> MegaConfig:
    from dataclasses import replace

    changed = {k: v for k, v in sizes.items() if getattr(cfg, k) != v}
    if not changed:
        return cfg
    heads = {}
    emb = changed.get("emb_dim", cfg.emb_dim)
    for h in ("encoder_heads", "decoder_heads"):
        if emb % getattr(cfg, h):
            heads[h] = 1
    return replace(cfg, name=f"{cfg.name}-from-shapes", **changed, **heads)


def load_mega(path, cfg: MegaConfig | None = None, with_encoder: bool = True):
    """Build MEGA and load an official or own checkpoint strictly.

    With `with_encoder=False` (deterministic mode) the encoder weights must still be present and
    well-shaped, but only its fully-masked output is kept (`train.model.mega.decoder_only`).
    """
    from train.model.mega import Mega, decoder_only

    ckpt = read_checkpoint(path)
    sd = ckpt["model"]
    if cfg is None:
        if ckpt.get("config_type") == "MegaConfig":
            cfg = config_from_dict(MegaConfig, ckpt["config"], f"{path} (embedded config)")
        elif ckpt.get("config_type"):
            # e.g. the tokenizer given where MEGA belongs: say what the file is
            raise CheckpointError(
                f"{path}: a {ckpt['config_type']} checkpoint, not MEGA; pass the MEGA weights (hmr final.pt or CVQMAE/mega_*)"
            )
        else:
            try:
                cfg = infer_mega_config(sd)
            except CheckpointError as e:
                raise CheckpointError(f"{path}: not a MEGA checkpoint ({e})") from None
    model = Mega(cfg, with_encoder=True)
    load_strict(model, sd, str(path), f"MEGA config {cfg.name}")
    model.eval()
    return (model if with_encoder else decoder_only(model)), cfg


def _embedded_config(ckpt: dict, cls, official_name: str, path):
    """The config an own checkpoint embeds; official checkpoints carry none and are the shipped one."""
    if ckpt.get("config_type") == cls.__name__:
        return config_from_dict(cls, ckpt["config"], f"{path} (embedded config)")
    return builtin_config(official_name, cls)


def load_pretrain_model(path, cfg: MegaConfig | None = None):
    """The pre-training model (official VQMAE/mega_pretrained) loaded strictly."""
    from train.model.mega import PretrainModel

    ckpt = read_checkpoint(path)
    if cfg is None:
        cfg = _embedded_config(ckpt, MegaConfig, "mega_hrnet", path)
        if ckpt.get("config_type") != "MegaConfig":
            cfg = _with_sizes(cfg, transformer_sizes(ckpt["model"]))
    model = PretrainModel(cfg)
    load_strict(model, ckpt["model"], str(path), "the pre-training model (VQMAE)")
    return model.eval(), cfg


def load_mesh_vqvae(path, cfg: MeshVQVAEConfig | None = None, assets_dir=None):
    """The Mesh-VQ-VAE tokenizer loaded strictly from an official or own checkpoint."""
    from train.model.mesh_vqvae import MeshVQVAE

    ckpt = read_checkpoint(path)
    if cfg is None:
        cfg = _embedded_config(ckpt, MeshVQVAEConfig, "mesh_vqvae", path)
    from train.model.mesh_vqvae import StateDictError

    model = MeshVQVAE.from_assets(cfg, assets_dir)
    try:
        model.load_official(ckpt["model"])
    except StateDictError as e:
        raise CheckpointError(f"{path}: does not match Mesh-VQ-VAE config {cfg.name} — {e}") from None
    return model.eval(), cfg


def save_checkpoint(path, model: torch.nn.Module, cfg, **extra) -> Path:
    """Write {"model", "config", "config_type", "format", **extra} atomically (train/io.py)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "config": config_to_dict(cfg),
        "config_type": type(cfg).__name__,
        "format": FORMAT,
        **extra,
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path
