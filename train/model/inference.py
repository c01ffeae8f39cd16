"""Inference-only rewrites of a trained network that keep its outputs (within float rounding).

- `fold_batchnorm`: a BatchNorm2d in eval mode right after a Conv2d is an affine map per channel, so
  it folds into the conv's weight and bias; the BN becomes Identity. This removes one full memory pass
  per conv in HRNet/ResNet. The state dict changes (BN keys vanish), so fold a *copy* used for serving,
  never a model you will save or train.
- `prepare_for_inference`: fold, then channels_last memory format (oneDNN's preferred conv layout on
  CPU; cuDNN's for tensor cores on GPU).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + bn.bias
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d registered directly after the Conv2d it normalises; returns the count.

    Modules in HRNet/ResNet register each BN right after its conv (conv1, bn1 / Sequential(conv, bn,
    relu)), and their forwards apply them in that order. Pairs are matched by registration order and
    channel count; the caller checks the folded copy against the original (see prepare_for_inference).
    """
    if model.training:
        raise RuntimeError("fold_batchnorm needs a model in eval mode (BN must use its running statistics)")
    folded = 0
    with torch.no_grad():
        for parent in model.modules():
            children = list(parent.named_children())
            for (_, a), (name_b, b) in zip(children, children[1:]):
                if (
                    isinstance(a, nn.Conv2d)
                    and isinstance(b, nn.BatchNorm2d)
                    and b.track_running_stats
                    and a.out_channels == b.num_features
                ):
                    _fold_into(a, b)
                    setattr(parent, name_b, nn.Identity())
                    folded += 1
    return folded


def prepare_for_inference(model: nn.Module, example: torch.Tensor | None = None, atol: float = 1e-3) -> nn.Module:
    """A folded, channels_last copy of `model` (eval); if `example` is given, prove it still agrees."""
    fast = copy.deepcopy(model).eval()
    fold_batchnorm(fast)
    fast = fast.to(memory_format=torch.channels_last)
    if example is not None:
        with torch.inference_mode():
            ref = model.eval()(example)
            got = fast(example.contiguous(memory_format=torch.channels_last))
        ref_t = ref if isinstance(ref, torch.Tensor) else ref.logits
        got_t = got if isinstance(got, torch.Tensor) else got.logits
        err = (ref_t - got_t).abs().max().item()
        if not err <= atol * max(1.0, ref_t.abs().max().item()):
            raise RuntimeError(f"inference rewrite changed the outputs (max abs diff {err:.3g}); not using it")
    return fast
