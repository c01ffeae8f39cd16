"""Mesh-VQ-VAE tokenizer: official key layout, strict loading, parity with the official outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.config import MeshVQVAEConfig, builtin_config
from train.model.mesh_vqvae import MeshVQVAE, StateDictError


def _official_keys(reference_dir):
    rows = []
    for line in (reference_dir / "keys" / "mesh_vqvae.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.strip("[]").split(",") if s.strip()), dtype.strip()))
    return rows


@pytest.fixture(scope="module")
def checkpoint(reference_dir):
    path = reference_dir / "fixtures" / "checkpoint" / "MESH_VQVAE" / "mesh_vqvae_54"
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def refs(reference_dir):
    data = np.load(reference_dir / "fixtures" / "refs" / "mesh_vqvae.npz")
    return {k: torch.from_numpy(data[k]) for k in data.files}


@pytest.fixture(scope="module")
def model(assets_dir, checkpoint):
    return MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(checkpoint).eval()


def test_yaml_config_is_the_default():
    assert builtin_config("mesh_vqvae", MeshVQVAEConfig) == MeshVQVAEConfig()


def test_state_dict_has_the_official_keys_and_shapes(assets_dir, reference_dir):
    sd = MeshVQVAE.from_assets(assets_dir=assets_dir).state_dict()
    ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()]
    assert ours == _official_keys(reference_dir)


def test_checkpoint_format(checkpoint):
    assert set(checkpoint) == {"model", "loss"}


def test_loads_ddp_prefixed_checkpoint(assets_dir, checkpoint, refs):
    ddp = {"model": {"module." + k: v for k, v in checkpoint["model"].items()}, "loss": checkpoint["loss"]}
    m = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(ddp).eval()
    with torch.inference_mode():
        assert torch.equal(m.codebook, checkpoint["model"]["vq_vae._embedding.weight"])
        assert torch.allclose(m.decode(refs["tokens"][:1]), refs["vertices"][:1], atol=1e-4, rtol=0)


def test_loads_from_path_and_bare_state_dict(assets_dir, reference_dir, checkpoint):
    path = reference_dir / "fixtures" / "checkpoint" / "MESH_VQVAE" / "mesh_vqvae_54"
    a = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(path)
    b = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(checkpoint["model"])
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_decode_matches_official(model, refs):
    with torch.inference_mode():
        verts = model.decode(refs["tokens"])
    assert verts.shape == refs["vertices"].shape and verts.dtype == torch.float32
    assert (verts - refs["vertices"]).abs().max() <= 1e-4


def test_codebook_lookup_matches_official(model, refs):
    assert model.codebook.shape == (512, 9)
    assert torch.equal(model.codebook[refs["tokens"]], refs["codebook_vectors"])


def test_encode_latent_matches_official(model, refs):
    with torch.inference_mode():
        latent = model.encode_latent(refs["vertices"])
    assert latent.shape == (refs["vertices"].shape[0], 54, 9)
    assert (latent - refs["encoder_latent"]).abs().max() <= 1e-4


def test_encode_matches_official_tokens(model, refs):
    with torch.inference_mode():
        tokens = model.encode(refs["vertices"])
    assert tokens.dtype == torch.long
    assert torch.equal(tokens, refs["reencoded_tokens"])


@pytest.mark.parametrize("cpu_slice", [None, 8], ids=["sliced", "whole-batch"])
def test_decode_is_batch_size_independent(model, monkeypatch, cpu_slice):
    # "whole-batch" runs the batch as one tensor, as on GPU and in exported graphs.
    if cpu_slice is not None:
        monkeypatch.setattr(model.decoder.model, "cpu_slice", cpu_slice)
    tokens = torch.randint(0, 512, (8, 54), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        batched = model.decode(tokens)
        for i in range(8):
            assert (batched[i] - model.decode(tokens[i : i + 1])[0]).abs().max() <= 1e-5


def test_encode_latent_whole_batch_matches_sliced(model, refs, monkeypatch):
    with torch.inference_mode():
        sliced = model.encode_latent(refs["vertices"])
        monkeypatch.setattr(model.encoder.model, "cpu_slice", 8)
        whole = model.encode_latent(refs["vertices"])
    assert (sliced - whole).abs().max() <= 1e-5


def test_decode_exports_with_a_dynamic_batch(model):
    class Decode(torch.nn.Module):
        def __init__(self, vqvae):
            super().__init__()
            self.vqvae = vqvae

        def forward(self, tokens):
            return self.vqvae.decode(tokens)

    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        Decode(model), (torch.zeros(2, 54, dtype=torch.long),), dynamic_shapes={"tokens": {0: batch}}
    )
    tokens = torch.randint(0, 512, (3, 54), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert (program.module()(tokens) - model.decode(tokens)).abs().max() <= 1e-5


def _export_route(model, latent):
    """The decoder as exported graphs compute it: one batch-agnostic graph, no slicing, no cache."""
    half = model.decoder
    return half._run(latent, half.model.operators(half.start, half.stop), half.model.run)


@pytest.mark.parametrize("batch", [1, 5])
def test_cpu_inference_route_matches_the_export_route(model, batch):
    tokens = torch.randint(0, 512, (batch, 54), generator=torch.Generator().manual_seed(batch))
    latent = model.vq_vae.lookup(tokens)
    model.decoder.model._bag_cache.clear()
    with torch.inference_mode():
        fast = model.decode(tokens)
        assert (7, 14) in model.decoder.model._bag_cache  # the inference route was taken
        want = _export_route(model, latent)
    assert fast.shape == (batch, 6890, 3)
    assert (fast - want).abs().max() <= 1e-5


def test_cpu_inference_route_follows_parameter_changes(assets_dir, checkpoint):
    m = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(checkpoint).eval()
    tokens = torch.randint(0, 512, (2, 54), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = m.decode(tokens)
        m.decoder.model.bias13.add_(0.5)  # in place, as an optimizer step
        shifted = m.decode(tokens)
        assert (shifted - before - 0.5).abs().max() <= 1e-5
        m.load_official(checkpoint)
        assert (m.decode(tokens) - before).abs().max() <= 1e-6
        m.decoder.model.w_weights11.data = m.decoder.model.w_weights11.data * 2  # replaced storage
        assert (m.decode(tokens) - _export_route(m, m.vq_vae.lookup(tokens))).abs().max() <= 1e-5


def test_cpu_inference_route_with_parameters_made_in_inference_mode(assets_dir, checkpoint, refs):
    with torch.inference_mode():
        m = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(checkpoint).eval()
        verts = m.decode(refs["tokens"])
    assert not m.decoder.model._bag_cache  # no version counter to key a cache on
    assert (verts - refs["vertices"]).abs().max() <= 1e-4


def test_decode_in_training_mode_keeps_gradients(assets_dir, checkpoint):
    m = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(checkpoint).train()
    latent = torch.randn(2, 54, 9, requires_grad=True)
    verts = m.decode_latent(latent)
    assert verts.requires_grad
    with torch.no_grad():
        assert (verts - m.decode_latent(latent)).abs().max() <= 1e-5
    verts.square().sum().backward()
    net = m.decoder.model
    for name in ("w_weights13", "weights11", "bias9", "p_neighbors12", "p_neighbors8"):
        grad = getattr(net, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert latent.grad is not None and latent.grad.abs().sum() > 0


def test_decode_latent_of_codebook_vectors_equals_decode(model, refs):
    with torch.inference_mode():
        assert torch.equal(model.decode_latent(model.codebook[refs["tokens"]]), model.decode(refs["tokens"]))


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape"])
def test_strict_load_names_the_bad_key(assets_dir, checkpoint, case):
    sd = dict(checkpoint["model"])
    key = "decoder.model.p_neighbors8"
    if case == "missing":
        del sd[key]
    elif case == "unexpected":
        key = "decoder.model.weight_res8"
        sd[key] = torch.zeros(3)
    else:
        sd[key] = sd[key][:, :5]
    with pytest.raises(StateDictError, match=key.replace(".", r"\.")):
        MeshVQVAE.from_assets(assets_dir=assets_dir).load_official({"model": sd})


def test_strict_load_rejects_diverging_encoder_decoder_copies(assets_dir, checkpoint):
    sd = dict(checkpoint["model"])
    sd["decoder.model.bias13"] = sd["decoder.model.bias13"] + 1
    with pytest.raises(StateDictError, match=r"bias13"):
        MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(sd)


def test_own_checkpoint_round_trips(assets_dir, model, tmp_path):
    path = tmp_path / "mesh_vqvae.pt"
    torch.save({"model": model.state_dict(), "loss": 0.0}, path)
    again = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_trainable_parameters_are_the_conv_net_once(model):
    # The shared encoder/decoder net appears once; the EMA codebook is not gradient-trained.
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.startswith("encoder.model.") for n in names)
    assert len(names) == 30


def _reference_layers(model, assets_dir, x, start, stop):
    """The official formulas written plainly (batch-major, zero point appended for padded slots,
    torch's ELU), to check our layouts and contraction orders, gradients included."""
    cfg, net = model.cfg, model.encoder.model
    for l in range(start, stop):
        conn = np.load(assets_dir / "meshconv" / f"_{cfg.connection_layers[l]}.npy")
        ids = torch.from_numpy(conn[:, 1::2].astype(np.int64))
        x_pad = torch.cat([x, torch.zeros_like(x[:, :1])], 1)
        mask = (ids < x.shape[1]).float()
        neighbours = x_pad[:, ids]  # (B, P, M, C_in)
        if cfg.residual_rate[l] == 0:
            basis = getattr(net, f"weights{l}").view(cfg.weight_num[l], cfg.channels[l], -1)  # (W, out, in)
            coeff = getattr(net, f"w_weights{l}") * mask[..., None]  # (P, M, W)
            per_basis = torch.einsum("pmw,bpmi->bpwi", coeff, neighbours)
            x = torch.einsum("bpwi,woi->bpo", per_basis, basis) + getattr(net, f"bias{l}")
            if l < len(cfg.channels) - 1:
                x = torch.nn.functional.elu(x)
        else:
            p = getattr(net, f"p_neighbors{l}").abs() * mask
            p = p / (p.sum(1, keepdim=True) + 1e-8)
            x = torch.einsum("pm,bpmc->bpc", p, neighbours)
    return x


def test_training_gradients_match_the_official_formulas(assets_dir, checkpoint, refs):
    m = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(checkpoint).train()
    verts = refs["vertices"][:1]
    results = []
    ours = lambda: m.decode_latent(m.encode_latent(verts))  # noqa: E731
    reference = lambda: _reference_layers(m, assets_dir, verts, 0, 14)  # noqa: E731
    for run in (ours, reference):
        m.zero_grad()
        out = run()
        out.square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}))
    (ours, our_grads), (ref, ref_grads) = results
    assert (ours - ref).abs().max() <= 1e-5
    for name, g in ref_grads.items():
        assert torch.allclose(our_grads[name], g, rtol=1e-3, atol=1e-5 * g.abs().max().item()), name


def test_training_forward_straight_through_and_ema(assets_dir, checkpoint, refs):
    torch.manual_seed(0)
    m = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(checkpoint).train()
    verts = refs["vertices"][:2].clone()
    before = m.codebook.clone()
    out = m(verts)
    assert set(out) == {"verts", "latent", "quantized", "tokens", "commitment_loss", "perplexity"}
    assert out["verts"].shape == verts.shape and out["tokens"].shape == (2, 54)
    # Straight-through: the decoder saw the codebook vectors, yet gradients reach the encoder.
    with torch.no_grad():
        assert torch.allclose(out["verts"], m.decode_latent(out["quantized"]), atol=1e-5)
        assert torch.equal(out["quantized"], before[out["tokens"]])
    (out["verts"].square().mean() + out["commitment_loss"]).backward()
    assert m.encoder.model.weights0.grad is not None and m.encoder.model.weights0.grad.abs().sum() > 0
    assert m.encoder.model.p_neighbors1.grad is not None
    # One EMA step with the official formulas.
    used = torch.unique(out["tokens"])
    assert not torch.equal(m.codebook[used], before[used])
    assert torch.allclose(m.codebook, m.vq_vae._ema_w / m.vq_vae._ema_cluster_size[:, None])
    assert torch.isclose(m.vq_vae._ema_cluster_size.sum(), torch.tensor(0.01 * out["tokens"].numel()), rtol=1e-4)


def test_eval_forward_leaves_codebook_alone(model, refs):
    before = {k: v.clone() for k, v in model.vq_vae.state_dict().items()}
    with torch.no_grad():
        model(refs["vertices"][:1])
    for k, v in model.vq_vae.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_restart_dead_codes(assets_dir, checkpoint):
    m = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(checkpoint)
    latents = torch.randn(4, 54, 9)
    m.vq_vae._ema_cluster_size.fill_(1.0)
    m.vq_vae._ema_cluster_size[[3, 7]] = 0.0
    assert m.restart_dead_codes(latents, generator=torch.Generator().manual_seed(0)) == 2
    flat = latents.reshape(-1, 9)
    for i in (3, 7):
        assert (m.codebook[i] == flat).all(1).any()
        assert torch.equal(m.vq_vae._ema_w[i] / m.vq_vae._ema_cluster_size[i], m.codebook[i])
    assert m.restart_dead_codes(latents) == 0


def test_rejects_wrong_vertex_shape(model):
    with pytest.raises(ValueError, match="6890"):
        model.encode(torch.zeros(1, 6889, 3))
