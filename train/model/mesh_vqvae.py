"""Mesh-VQ-VAE tokenizer: SMPL vertices (B, 6890, 3) <-> 54 tokens of a 512 x 9 codebook.

Computes what the official `MeshVQVAE(FullyConvAE(config_medium))` computes (to float rounding,
~1e-7 on the parity fixtures) and keeps its checkpoint layout key for key (`encoder.model.*`,
`vq_vae.*`, `decoder.model.*`), so official files load strictly and our checkpoints load into the
official code.

Inputs are canonical SMPL vertices in metres as the official training saw them: zero global
orientation, centred on the vertex mean. The official reconstruction loss centres the prediction
first, so decoded meshes are only defined up to a translation.

The network is a stack of 14 mesh layers over fixed connection matrices (`meshconv/_pool0..6`,
`_unpool6..0`). A conv layer builds, at each output point p and neighbour slot m, the kernel
sum_w w_weights[p,m,w] * basis[w]; we never materialise that (P, M, out, in) tensor. Instead each
layer gathers neighbours and contracts in whichever order moves less data:
  gather-first: y[p,w] = sum_m c[p,m,w] x[nbr(p,m)], then one matmul with the stacked basis;
  basis-first:  z = x @ basis (9*out channels), then out[p] = sum_{m,w} c[p,m,w] z[nbr(p,m), w].
A pooling layer is a normalised weighted sum over its neighbour slots. Activations are kept
point-major, (points, batch*channels), so every gather is one `index_select` of contiguous rows and
every contraction a `bmm`/matmul or a sum, whatever the batch size: no loops over points, no
data-dependent shapes, exportable with a dynamic batch.

Inference on the CPU (no autograd) takes a faster route to the same sums: every neighbour sum is one
`F.embedding_bag` (a weighted sum of rows picked by index, with the padded slots left out), which
never materialises the (points, slots, channels) gather, and the operators derived from the
parameters are cached until a parameter changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.config import MeshVQVAEConfig

NUM_VERTS = 6890
NUM_TOKENS = 54
_POOL_EPS = 1e-8  # official normaliser of the pooling weights
_EMA_EPS = 1e-5  # official Laplace smoothing of the EMA cluster sizes
# On CPU a batch runs in slices whose largest temporary stays under this size. glibc serves bigger
# blocks with fresh mmap, so a whole batch-8 neighbour gather (~80 MB) is page-faulted in on every
# call, which costs more than the arithmetic (measured: batch 8 in one go ~3x slower than 8 x 1).
_CPU_SLICE_BYTES = 16 << 20
# Samples per slice on the CPU inference route. Its largest temporary is ~2 MB per sample (one
# L2); measured at 1 and 2 threads, one sample at a time was fastest for batches 1..16.
_BAG_SLICE = 1


class StateDictError(ValueError):
    """A checkpoint that does not match the module key for key; the message names the key."""


def _neighbour_table(connection, in_points: int, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour ids (padding replaced by 0) and a 0/1 mask from one connection matrix.

    Rows are `count, id0, dist0, id1, dist1, ...`; a padded slot holds id == in_points. The official
    code appends a zero point at that index; masking the coefficients instead avoids copying the
    activations once per layer and gives the same sums.
    """
    conn = np.asarray(connection)
    if conn.ndim != 2 or conn.shape[1] % 2 != 1:
        raise ValueError(f"layer {layer}: connection matrix must be (points, 1 + 2*max_nbr), got {conn.shape}")
    ids = torch.from_numpy(conn[:, 1::2].astype(np.int64))
    if ids.min() < 0 or ids.max() > in_points:
        raise ValueError(f"layer {layer}: neighbour ids must lie in [0, {in_points}] (input has {in_points} points)")
    valid = ids < in_points
    return torch.where(valid, ids, torch.zeros_like(ids)), valid.float()


class MeshConvNet(nn.Module):
    """The official `FullyConvAE`: parameters `weights<l>`, `bias<l>`, `w_weights<l>`, `p_neighbors<l>`.

    `run(...)` applies layers [start, stop) to point-major activations (points, B*C).
    ELU follows every conv layer except the network's last one (so the bottleneck is ELU'd too).
    """

    def __init__(self, cfg: MeshVQVAEConfig, connections: Sequence):
        super().__init__()
        if len(connections) != len(cfg.connection_layers):
            raise ValueError(f"expected {len(cfg.connection_layers)} connection matrices, got {len(connections)}")
        self.num_layers = len(cfg.channels)
        self.in_points = int(np.asarray(connections[0]).shape[0])
        # Static per-layer shapes as Python ints, so forward has no data-dependent shapes.
        self.specs: list[dict] = []
        in_points, in_ch = self.in_points, 3
        for l, conn in enumerate(connections):
            out_ch, basis, rate = cfg.channels[l], cfg.weight_num[l], cfg.residual_rate[l]
            ids, mask = _neighbour_table(conn, in_points, l)
            out_points, max_nbr = ids.shape
            avg_nbr = round(float(np.asarray(conn)[:, 0].mean()))
            if rate == 0:
                if basis < 1:
                    raise ValueError(f"layer {l}: a conv layer (residual_rate 0) needs weight_num >= 1")
                kind = "conv"
                # Official initialisation, so training from scratch starts where theirs does.
                self.register_parameter(f"weights{l}", nn.Parameter(torch.randn(basis, out_ch * in_ch)))
                self.register_parameter(f"bias{l}", nn.Parameter(torch.zeros(out_ch)))
                self.register_parameter(
                    f"w_weights{l}", nn.Parameter(torch.randn(out_points, max_nbr, basis) / (avg_nbr * basis))
                )
            elif rate == 1:
                # The official pure-residual layer; a channel change would need `weight_res<l>`,
                # which config_medium never uses, so it is not supported here.
                if out_ch != in_ch:
                    raise ValueError(f"layer {l}: pooling layers must keep the channel count ({in_ch} -> {out_ch})")
                kind = "pool" if out_points != in_points else "identity"
                if kind == "pool":
                    self.register_parameter(f"p_neighbors{l}", nn.Parameter(torch.randn(out_points, max_nbr) / avg_nbr))
            else:
                raise ValueError(f"layer {l}: residual_rate must be 0 (conv) or 1 (pool), got {rate}")
            # Flat neighbour ids in the order the layer gathers: point-major for conv, slot-major for pool.
            order = ids.t() if kind == "pool" else ids
            self.register_buffer(f"nbr{l}", order.reshape(-1).clone(), persistent=False)
            self.register_buffer(f"mask{l}", mask, persistent=False)
            # Contract in the order that gathers fewer floats per sample (see module docstring).
            gather_first = out_points * max_nbr * in_ch + out_points * basis * in_ch
            basis_first = in_points * basis * out_ch + out_points * max_nbr * basis * out_ch
            # The CPU inference route reads neighbour rows in place, so its cost is the multiply-adds
            # of the neighbour sums plus those of the matmul with the basis.
            valid_slots = int(mask.sum())
            bag_gather_first = valid_slots * basis * in_ch + out_points * basis * in_ch * out_ch
            bag_basis_first = in_points * in_ch * basis * out_ch + valid_slots * basis * out_ch
            if kind != "identity":
                self._register_bags(l, kind, ids, mask, basis, kind == "conv" and bag_basis_first < bag_gather_first)
            self.specs.append(
                dict(
                    kind=kind,
                    in_points=in_points,
                    out_points=out_points,
                    max_nbr=max_nbr,
                    in_ch=in_ch,
                    out_ch=out_ch,
                    basis=basis,
                    basis_first=kind == "conv" and basis_first < gather_first,
                    bag_basis_first=kind == "conv" and bag_basis_first < bag_gather_first,
                )
            )
            in_points, in_ch = out_points, out_ch
        peak_floats = max(
            s["out_points"] * s["max_nbr"] * (s["basis"] * s["out_ch"] if s["basis_first"] else s["in_ch"])
            for s in self.specs
        )
        self.cpu_slice = max(1, _CPU_SLICE_BYTES // (4 * peak_floats))  # samples per CPU slice
        self.bag_slice = _BAG_SLICE  # samples per slice on the CPU inference route
        self._bag_cache: dict = {}  # (start, stop) -> (parameter versions, bag operators)

    def pool_weights(self, l: int) -> torch.Tensor:
        """Normalised pooling weights |p|*mask / (sum |p|*mask + 1e-8), (out_points, max_nbr)."""
        p = getattr(self, f"p_neighbors{l}").abs() * getattr(self, f"mask{l}")
        return p / (p.sum(1, keepdim=True) + _POOL_EPS)

    def operators(self, start: int, stop: int) -> list:
        """What layers [start, stop) need from the parameters, derived once per call (not per slice).

        Derived in forward rather than cached, so it is right in train and eval mode alike and
        follows `load_state_dict` / optimizer steps without invalidation logic.
        """
        ops = []
        for l in range(start, stop):
            s = self.specs[l]
            if s["kind"] == "conv":
                k, c_in, c_out = s["basis"], s["in_ch"], s["out_ch"]
                # Padded slots must contribute nothing (official: they read an appended zero point).
                coeff = getattr(self, f"w_weights{l}") * getattr(self, f"mask{l}").unsqueeze(-1)  # (P, M, K)
                basis = getattr(self, f"weights{l}").view(k, c_out, c_in)  # official channel o*in + i
                if s["basis_first"]:
                    coeff = coeff.reshape(s["out_points"], 1, s["max_nbr"] * k)
                    basis = basis.permute(2, 0, 1).reshape(c_in, k * c_out)  # [i, (w, o)]
                else:
                    coeff = coeff.transpose(1, 2).contiguous()  # (P, K, M)
                    basis = basis.permute(0, 2, 1).reshape(k * c_in, c_out)  # [(w, i), o]
                ops.append((coeff, basis, getattr(self, f"bias{l}")))
            elif s["kind"] == "pool":
                ops.append(self.pool_weights(l).t().unsqueeze(-1))  # (M, P, 1), slot-major like the gather
            else:
                ops.append(None)
        return ops

    def _conv(self, l: int, x: torch.Tensor, batch: int, coeff, basis, bias) -> torch.Tensor:
        s = self.specs[l]
        p_in, p_out, m, k = s["in_points"], s["out_points"], s["max_nbr"], s["basis"]
        c_in, c_out = s["in_ch"], s["out_ch"]
        ids = getattr(self, f"nbr{l}")
        if s["basis_first"]:
            z = x.reshape(p_in * batch, c_in) @ basis
            # (P_in, B, K, out) -> (P_in, K, B, out): neighbour slots and bases become one axis below.
            z = z.view(p_in, batch, k, c_out).transpose(1, 2).reshape(p_in, k * batch * c_out)
            g = z.index_select(0, ids).view(p_out, m * k, batch * c_out)
            y = torch.bmm(coeff, g).view(p_out * batch, c_out) + bias
        else:
            g = x.index_select(0, ids).view(p_out, m, batch * c_in)
            y = torch.bmm(coeff, g)  # (P, K, B*in)
            y = y.view(p_out, k, batch, c_in).transpose(1, 2).reshape(p_out * batch, k * c_in)
            y = torch.addmm(bias, y, basis)
        return y.view(p_out, batch * c_out)

    def _pool(self, l: int, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # Slot-major (M, P, C): the weighted sum is M-1 contiguous adds, ~3x faster than a bmm of
        # P tiny (1 x M) @ (M x C) products.
        s = self.specs[l]
        g = x.index_select(0, getattr(self, f"nbr{l}")).view(s["max_nbr"], s["out_points"], -1)
        return (g * weights).sum(0)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def bag_operators(self, start: int, stop: int) -> list:
        """`F.embedding_bag` operands of layers [start, stop), for inference only (no autograd).

        Per layer: flat row ids, per-row weights and bag offsets, padded slots left out, plus the
        basis and bias of a conv layer. A conv's bags are (point, basis) pairs over the input
        points (gather-first) or points over (input point, basis) rows of x @ basis (basis-first).
        Cached until a parameter is replaced (`data_ptr`) or changed in place (`_version`: optimizer
        steps, `load_state_dict`); parameters made in inference mode have no version, so nothing
        derived from them is cached.
        """
        params = [p for l in range(start, stop) for p in self._layer_params(l)]
        if any(p.is_inference() for p in params):
            return self._bag_operators(start, stop)
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        hit = self._bag_cache.get((start, stop))
        if hit is not None and hit[0] == key:
            return hit[1]
        ops = self._bag_operators(start, stop)
        self._bag_cache[(start, stop)] = (key, ops)
        return ops

    def _layer_params(self, l: int) -> list[torch.Tensor]:
        kind = self.specs[l]["kind"]
        if kind == "conv":
            return [getattr(self, f"{n}{l}") for n in ("weights", "bias", "w_weights")]
        return [getattr(self, f"p_neighbors{l}")] if kind == "pool" else []

    def _register_bags(self, l: int, kind: str, ids: torch.Tensor, mask: torch.Tensor, basis: int, basis_first: bool):
        """The inference route's fixed operands of layer l, from the connection matrix alone: flat row ids
        (padded slots left out), bag offsets, and where each row's weight sits in the layer's coefficient
        tensor, so that deriving the weights is one `index_select` (no boolean mask, which would read
        the mask back to the host)."""
        valid = mask.numpy() > 0  # (P, M)
        ids_np = ids.numpy()
        p_out, m = valid.shape
        counts = valid.sum(1)
        if kind == "pool":  # bag p: rows nbr(p, m); weights from the (P, M) pooling weights
            flat = np.flatnonzero(valid)
            rows, take, per_bag = ids_np.reshape(-1)[flat], flat, counts
        elif basis_first:  # bag p: rows (nbr(p, m), w) of x @ basis viewed as (P_in * K, out)
            flat = np.flatnonzero(valid)[:, None]  # index of (p, m) in (P, M)
            rows = (ids_np.reshape(-1)[flat] * basis + np.arange(basis)).reshape(-1)
            take = (flat * basis + np.arange(basis)).reshape(-1)  # into w_weights (P, M, K)
            per_bag = counts * basis
        else:  # bag (p, w): rows nbr(p, m) of x, weights w_weights[p, m, w]
            pi, wi, mi = np.nonzero(np.broadcast_to(valid[:, None, :], (p_out, basis, m)))
            rows, take = ids_np[pi, mi], (pi * m + mi) * basis + wi
            per_bag = np.repeat(counts, basis)
        offsets = np.cumsum(per_bag) - per_bag
        for name, value in (("rows", rows), ("take", take), ("offsets", offsets)):
            self.register_buffer(
                f"bag_{name}{l}", torch.from_numpy(np.ascontiguousarray(value, np.int64)), persistent=False
            )

    @torch.no_grad()
    def _bag_operators(self, start: int, stop: int) -> list:
        ops = []
        for l in range(start, stop):
            s = self.specs[l]
            if s["kind"] == "identity":
                ops.append(None)
                continue
            rows, take, offsets = (getattr(self, f"bag_{n}{l}") for n in ("rows", "take", "offsets"))
            if s["kind"] == "pool":
                ops.append((rows, self.pool_weights(l).reshape(-1).index_select(0, take), offsets))
                continue
            k, c_in, c_out = s["basis"], s["in_ch"], s["out_ch"]
            weights = getattr(self, f"w_weights{l}").reshape(-1).index_select(0, take)
            basis = getattr(self, f"weights{l}").view(k, c_out, c_in)  # official channel o*in + i
            if s["bag_basis_first"]:
                basis = basis.permute(2, 0, 1).reshape(c_in, k * c_out)  # [i, (w, o)]
            else:
                basis = basis.permute(0, 2, 1).reshape(k * c_in, c_out)  # [(w, i), o]
            ops.append((rows, weights, offsets, basis, getattr(self, f"bias{l}").detach()))
        return ops

    def run_bags(self, x: torch.Tensor, batch: int, start: int, stop: int, ops: list) -> torch.Tensor:
        """`run` on the inference route; `ops` from `bag_operators`."""
        for l, op in zip(range(start, stop), ops):
            s = self.specs[l]
            if s["kind"] == "pool":
                rows, weights, offsets = op
                x = F.embedding_bag(rows, x, offsets, mode="sum", per_sample_weights=weights)
            elif s["kind"] == "conv":
                x = self._conv_bags(s, x, batch, *op)
                if l < self.num_layers - 1:
                    x = _elu(x)
        return x

    @staticmethod
    def _conv_bags(s: dict, x: torch.Tensor, batch: int, rows, weights, offsets, basis, bias) -> torch.Tensor:
        p_in, p_out, k, c_in, c_out = s["in_points"], s["out_points"], s["basis"], s["in_ch"], s["out_ch"]
        if s["bag_basis_first"]:
            z = (x.reshape(p_in * batch, c_in) @ basis).view(p_in, batch, k, c_out)
            z = z.transpose(1, 2).reshape(p_in * k, batch * c_out)  # a copy only when batch > 1
            y = F.embedding_bag(rows, z, offsets, mode="sum", per_sample_weights=weights)
            return (y.view(p_out * batch, c_out) + bias).view(p_out, batch * c_out)
        y = F.embedding_bag(rows, x, offsets, mode="sum", per_sample_weights=weights)  # (P * K, B * in)
        y = y.view(p_out, k, batch, c_in).transpose(1, 2).reshape(p_out * batch, k * c_in)
        return torch.addmm(bias, y, basis).view(p_out, batch * c_out)

    def run(self, x: torch.Tensor, batch: int, start: int, stop: int, ops: list) -> torch.Tensor:
        """Layers [start, stop) on point-major activations (points, batch*channels); `ops` from `operators`."""
        for l, op in zip(range(start, stop), ops):
            kind = self.specs[l]["kind"]
            if kind == "conv":
                x = self._conv(l, x, batch, *op)
                if l < self.num_layers - 1:
                    x = _elu(x)
            elif kind == "pool":
                x = self._pool(l, x, op)
        return x


def _elu(x: torch.Tensor) -> torch.Tensor:
    """ELU(alpha=1) via exp: ATen's CPU ELU goes through a scalar expm1 and was ~10x slower here.

    Differs from expm1 by at most ~1e-7 absolute. The clamp keeps exp finite, so the unused branch
    of `where` cannot turn gradients into NaN.
    """
    return torch.where(x > 0, x, torch.exp(x.clamp(max=0)) - 1)


class _Half(nn.Module):
    """The official `Encoder`/`Decoder` wrapper: holds the shared net as `.model` (hence the keys)."""

    def __init__(self, model: MeshConvNet, start: int, stop: int):
        super().__init__()
        self.model = model
        self.start, self.stop = start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P_in, C_in) -> (B, P_out, C_out)."""
        net = self.model
        # Export and compile see one batch-agnostic graph; slicing is an eager-CPU detail.
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return self._run(x, net.operators(self.start, self.stop), net.run)
        if x.device.type == "cpu" and not torch.is_grad_enabled() and x.dtype == net.dtype:
            ops, run, step = net.bag_operators(self.start, self.stop), net.run_bags, net.bag_slice
        else:
            ops, run, step = net.operators(self.start, self.stop), net.run, net.cpu_slice
        if x.device.type == "cpu" and x.shape[0] > step:
            return torch.cat([self._run(part, ops, run) for part in x.split(step)])
        return self._run(x, ops, run)

    def _run(self, x: torch.Tensor, ops: list, run) -> torch.Tensor:
        batch, points, channels = x.shape
        x = x.transpose(0, 1).reshape(points, batch * channels)
        y = run(x, batch, self.start, self.stop, ops)
        return y.view(y.shape[0], batch, -1).transpose(0, 1).contiguous()


class VectorQuantizerEMA(nn.Module):
    """Codebook with EMA updates (official `VectorQuantizerEMA`; keys `_ema_w`, `_ema_cluster_size`,
    `_embedding.weight`). The codebook moves only by EMA, so the EMA state is kept in buffers and the
    codebook does not require grad (the official code re-creates Parameters each step instead, which
    leaves stale copies in the optimizer)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float, decay: float):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.commitment_cost, self.decay = commitment_cost, decay
        self.register_buffer("_ema_w", torch.randn(num_embeddings, embedding_dim))
        self.register_buffer("_ema_cluster_size", torch.zeros(num_embeddings))
        self._embedding = nn.Embedding(num_embeddings, embedding_dim)
        self._embedding.weight.requires_grad_(False)
        nn.init.normal_(self._embedding.weight)

    @property
    def codebook(self) -> torch.Tensor:
        return self._embedding.weight

    def nearest(self, latent: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook entry, (...,) long.

        Same expansion as the official code (|z|^2 + |e|^2 - 2 z.e), so near-ties break the same way.
        """
        flat = latent.reshape(-1, self.embedding_dim)
        e = self.codebook.to(flat)
        dist = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()
        return dist.argmin(1).view(latent.shape[:-1])

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.codebook)

    @torch.no_grad()
    def ema_update(self, flat_latent: torch.Tensor, flat_tokens: torch.Tensor) -> torch.Tensor:
        """One official EMA step from a batch of latents and their tokens; returns the code counts."""
        counts = torch.bincount(flat_tokens, minlength=self.num_embeddings).to(self._ema_cluster_size.dtype)
        size = self._ema_cluster_size * self.decay + (1 - self.decay) * counts
        n = size.sum()
        size = (size + _EMA_EPS) / (n + self.num_embeddings * _EMA_EPS) * n
        dw = torch.zeros_like(self._ema_w).index_add_(0, flat_tokens, flat_latent.to(self._ema_w))
        self._ema_cluster_size.copy_(size)
        self._ema_w.mul_(self.decay).add_((1 - self.decay) * dw)
        self.codebook.copy_(self._ema_w / size.unsqueeze(1))
        return counts

    @torch.no_grad()
    def restart_dead_codes(
        self, latents: torch.Tensor, threshold: float = 1e-3, generator: torch.Generator | None = None
    ) -> int:
        """Move codes whose EMA usage fell below `threshold` onto random latents of the batch.

        Needed because an unused code keeps `_ema_w / ~1e-5` after the first EMA step and drifts far
        from every latent, so it is never chosen again. Returns how many codes were restarted.
        """
        dead = (self._ema_cluster_size < threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        flat = latents.detach().reshape(-1, self.embedding_dim).to(self._ema_w)
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), generator=generator, device="cpu")
        fresh = flat[pick.to(flat.device)]
        self._ema_cluster_size[dead] = 1.0
        self._ema_w[dead] = fresh
        self.codebook[dead] = fresh
        return int(dead.numel())


class MeshVQVAE(nn.Module):
    """The tokenizer. Inference: `encode`, `encode_latent`, `quantize`, `decode`, `decode_latent`.
    Training: `forward(verts)` returns a dict of named tensors (see there)."""

    def __init__(self, cfg: MeshVQVAEConfig | None, connections: Mapping | Sequence):
        """`connections`: the int matrices of `cfg.connection_layers`, by name or in that order
        (`from_assets` reads them from the assets folder); `cfg=None` is config_medium."""
        super().__init__()
        cfg = cfg or MeshVQVAEConfig()
        if isinstance(connections, Mapping):
            missing = [n for n in cfg.connection_layers if n not in connections]
            if missing:
                raise ValueError(f"connection matrices missing for layer(s) {', '.join(missing)}")
            connections = [connections[n] for n in cfg.connection_layers]
        self.cfg = cfg
        net = MeshConvNet(cfg, connections)
        split = net.num_layers // 2  # official: the encoder is the first half, bottleneck included
        # Registration order fixes the state_dict order: encoder.*, vq_vae.*, decoder.* (official).
        self.encoder = _Half(net, 0, split)
        self.vq_vae = VectorQuantizerEMA(cfg.num_embeddings, cfg.embedding_dim, cfg.commitment_cost, cfg.decay)
        self.decoder = _Half(net, split, net.num_layers)
        self.num_verts = net.in_points

    @classmethod
    def from_assets(
        cls, cfg: MeshVQVAEConfig | None = None, assets_dir: str | os.PathLike | None = None
    ) -> "MeshVQVAE":
        """Build with the connection matrices found by `train.assets` (or in `assets_dir`)."""
        from train.assets import find_asset

        cfg = cfg or MeshVQVAEConfig()
        conns = {n: np.load(find_asset(f"meshconv/_{n}.npy", assets_dir)) for n in cfg.connection_layers}
        return cls(cfg, conns)

    # ---------------------------------------------------------------- inference
    @property
    def codebook(self) -> torch.Tensor:
        """(num_embeddings, embedding_dim)."""
        return self.vq_vae.codebook

    def _check_verts(self, verts: torch.Tensor) -> None:
        if verts.dim() != 3 or verts.shape[1:] != (self.num_verts, 3):
            raise ValueError(f"expected vertices (B, {self.num_verts}, 3), got {tuple(verts.shape)}")

    def encode_latent(self, verts_canonical: torch.Tensor) -> torch.Tensor:
        """(B, 6890, 3) -> continuous latents (B, 54, 9), after the bottleneck's ELU."""
        self._check_verts(verts_canonical)
        return self.encoder(verts_canonical)

    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, 54, 9) -> tokens (B, 54) long: nearest codebook entry."""
        return self.vq_vae.nearest(latent)

    def encode(self, verts_canonical: torch.Tensor) -> torch.Tensor:
        """(B, 6890, 3) -> tokens (B, 54) long."""
        return self.quantize(self.encode_latent(verts_canonical))

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, 54, 9) -> vertices (B, 6890, 3), canonical frame."""
        return self.decoder(latent)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 54) token ids -> vertices (B, 6890, 3), canonical frame."""
        return self.decode_latent(self.vq_vae.lookup(tokens))

    # ----------------------------------------------------------------- training
    def forward(self, verts_canonical: torch.Tensor) -> dict[str, torch.Tensor]:
        """Autoencode with straight-through quantisation (official training step, minus the recon loss).

        Returns `verts` (reconstruction), `latent`, `quantized` (codebook vectors, no gradient),
        `tokens`, `commitment_loss` (commitment_cost * mse(latent, sg[quantized])), `perplexity`.
        In train mode the codebook takes one EMA step, after quantising with the old codebook.
        """
        latent = self.encode_latent(verts_canonical)
        tokens = self.vq_vae.nearest(latent.detach())
        quantized = self.vq_vae.lookup(tokens).detach()
        flat_tokens = tokens.reshape(-1)
        if self.training:
            counts = self.vq_vae.ema_update(latent.detach().reshape(-1, self.cfg.embedding_dim), flat_tokens)
        else:
            counts = torch.bincount(flat_tokens, minlength=self.cfg.num_embeddings).to(latent.dtype)
        probs = counts / flat_tokens.numel()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        commitment_loss = self.cfg.commitment_cost * F.mse_loss(latent, quantized)
        straight_through = latent + (quantized - latent).detach()
        return dict(
            verts=self.decode_latent(straight_through),
            latent=latent,
            quantized=quantized,
            tokens=tokens,
            commitment_loss=commitment_loss,
            perplexity=perplexity,
        )

    def restart_dead_codes(self, latents: torch.Tensor, threshold: float = 1e-3, generator=None) -> int:
        """See `VectorQuantizerEMA.restart_dead_codes`; call it between steps with recent latents."""
        return self.vq_vae.restart_dead_codes(latents, threshold, generator)

    # ------------------------------------------------------------------ loading
    def load_official(self, source) -> "MeshVQVAE":
        """Strictly load an official or own checkpoint: a path, `{"model": sd, ...}` or a bare state dict.

        Keys may carry a `module.` prefix (DistributedDataParallel). A missing, unexpected or
        misshaped key raises `StateDictError` naming it; so does an `encoder.model.X` that differs
        from its `decoder.model.X` twin, since both name the one shared tensor here.
        """
        sd = official_state_dict(source)
        own = self.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        if missing:
            raise StateDictError(f"missing key(s) in Mesh-VQ-VAE checkpoint: {', '.join(missing)}")
        if unexpected:
            raise StateDictError(f"unexpected key(s) in Mesh-VQ-VAE checkpoint: {', '.join(unexpected)}")
        for k, v in own.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise StateDictError(f"{k}: shape {list(sd[k].shape)} in checkpoint, expected {list(v.shape)}")
        for k in own:
            if k.startswith("encoder.model."):
                twin = "decoder.model." + k[len("encoder.model.") :]
                if not torch.equal(sd[k], sd[twin]):
                    raise StateDictError(f"{k} and {twin} differ; the official model shares them")
        self.load_state_dict(sd, strict=True)
        return self


def official_state_dict(source) -> dict[str, torch.Tensor]:
    """The bare state dict from a path, `{"model": sd, "loss": ...}` or a state dict; `module.` stripped."""
    if isinstance(source, (str, os.PathLike)):
        source = torch.load(Path(source), map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise StateDictError(f"expected a checkpoint dict, got {type(source).__name__}")
    if "model" in source and isinstance(source["model"], Mapping):
        source = source["model"]
    bad = [k for k, v in source.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise StateDictError(f"checkpoint entry {bad[0]} is not a tensor (expected a state dict)")
    keys = list(source)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in source.items()}
    return dict(source)
