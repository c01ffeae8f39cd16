"""Helpers for the parity tests against the official fixtures in ../shared/reference (README there):
the fixtures' mini configs and the official sampler's numpy noise, replayed."""

from __future__ import annotations

import re

import numpy as np
import torch

from train.config import MegaConfig


def mini_config(manifest: dict, name: str) -> MegaConfig:
    kw = manifest["models"][name]["kwargs"]
    backbone = name.split("_")[1] if name.startswith("cvqmae") else "hrnet"
    extra = {}
    if backbone == "hrnet":
        extra["hrnet_width"] = 8
    elif backbone == "resnet":
        extra["resnet_blocks"] = (1, 1, 1, 1)
    else:
        extra.update(vit_embed_dim=64, vit_depth=2, vit_heads=4, vit_patch=16)
    hw = manifest["models"][name].get("input_hw", (224, 224))
    return MegaConfig(
        name=f"mini_{name}",
        backbone=backbone,
        input_height=hw[0],
        input_width=hw[1],
        seq_length=kw["seq_length"],
        num_embeddings=kw["num_embeddings"],
        emb_dim=kw["emb_dim"],
        encoder_layers=kw["encoder_layer"],
        encoder_heads=kw["encoder_head"],
        decoder_layers=kw["decoder_layer"],
        decoder_heads=kw["decoder_head"],
        dim_tokens=kw["dim_tokens"],
        cond_length=kw.get("cond_length", 49),
        cond_dim=kw.get("cond_dim", 720),
        **extra,
    )


def replay_official_noise(calls: list[str], seed: int, temperatures: list[float], batch: int):
    """Make the official generate()'s numpy calls in order; return pre-scaled noise per step."""
    rng = np.random.RandomState(seed)  # the legacy global RNG is one RandomState
    draws = []
    for call in calls:
        if m := re.fullmatch(r"shuffle\((\d+)\)", call):
            rng.shuffle(np.arange(int(m.group(1))))
        elif m := re.fullmatch(r"gumbel\[(.*)\]", call):
            draws.append(rng.gumbel(size=tuple(int(x) for x in m.group(1).split(","))))
        else:
            raise AssertionError(f"unknown RNG call {call}")
    assert len(draws) == 2 * len(temperatures)
    noise = []
    for t, temp in enumerate(temperatures):
        g_tok, g_conf = draws[2 * t], draws[2 * t + 1]
        assert g_tok.shape[0] == batch
        # the official code scales in float64, then converts to float32
        noise.append(
            (torch.from_numpy((temp * g_tok).astype(np.float32)), torch.from_numpy((temp * g_conf).astype(np.float32)))
        )
    return noise
