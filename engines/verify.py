"""Parity between backends: the same inputs through two backends, max/mean differences per output.

Integer and boolean outputs (tokens, visibility) are compared exactly and reported as the number of
mismatching entries; float outputs as max and mean absolute differences. Each graph is compared on
its own, and a stochastic engine's whole T-step loop as well (`loop_parity`, fed the same images and
noise): the reference loop runs the full-length `step` graph, the candidate's runner the fixed-length
`step_v{K}` graphs where the engine has them, so the figures also say that those give the same tokens. `mega-rt verify` (`verify_pair`) and the parity figures written into every manifest at export
(`measure_parity`) come from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Diff:
    name: str
    exact: bool  # integer/bool output: compared for equality
    max_abs: float
    mean_abs: float
    mismatched: int  # entries that differ (exact outputs) / exceed 0 (float outputs: not counted, -1)
    numel: int

    def line(self) -> str:
        if self.exact:
            status = "identical" if self.mismatched == 0 else f"{self.mismatched}/{self.numel} differ"
            return f"{self.name:<16} {status}"
        return f"{self.name:<16} max {self.max_abs:.3g}  mean {self.mean_abs:.3g}"

    def as_dict(self) -> dict:
        return asdict(self)


def diff_tensors(name: str, a: torch.Tensor, b: torch.Tensor) -> Diff:
    a, b = a.detach().cpu(), b.detach().cpu()
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.is_floating_point() or b.is_floating_point():
        d = (a.double() - b.double()).abs()
        return Diff(
            name, False, float(d.max()) if d.numel() else 0.0, float(d.mean()) if d.numel() else 0.0, -1, d.numel()
        )
    ne = a.long() != b.long()
    return Diff(
        name, True, float(ne.any()), float(ne.double().mean()) if ne.numel() else 0.0, int(ne.sum()), ne.numel()
    )


def compare_outputs(reference: dict, candidate: dict) -> dict[str, Diff]:
    missing = sorted(set(reference) ^ set(candidate))
    if missing:
        raise ValueError(f"outputs differ in name: {missing}")
    return {n: diff_tensors(n, reference[n], candidate[n]) for n in reference}


def compare_backends(reference, candidate, feeds: dict) -> dict[str, Diff]:
    """Run both backends on the same feeds (each gets its own copy on its device) and diff the outputs."""
    ref = {k: v.clone() for k, v in reference.run(feeds).items()}
    cand = {k: v.clone() for k, v in candidate.run(feeds).items()}
    return compare_outputs(ref, cand)


def summarise(diffs: dict[str, Diff]) -> dict:
    """Compact figures for a manifest / summary: float outputs' max abs, exact outputs' mismatches."""
    out = {}
    for n, d in diffs.items():
        out[n] = (
            {"mismatched": d.mismatched, "numel": d.numel}
            if d.exact
            else {"max_abs": d.max_abs, "mean_abs": d.mean_abs}
        )
    return out


def shared_noise(rows: int, num_tokens: int, codebook_size: int, steps: int, temperature: float, seed: int):
    """Pre-scaled (token, confidence) Gumbel noise per step, drawn on the CPU in Mega.generate's order."""
    from train import sampling

    g = torch.Generator().manual_seed(seed)
    noise = []
    for t in range(1, steps + 1):
        temp = sampling.step_temperature(t, steps, temperature)
        noise.append(
            (
                temp * sampling.gumbel((rows, num_tokens, codebook_size), g),
                temp * sampling.gumbel((rows, num_tokens), g),
            )
        )
    return noise


def loop_parity(
    reference: dict, candidate: dict, cfg, samples: int, steps: int, temperature: float, batch: int, seed: int = 0
) -> dict[str, Diff]:
    """The whole stochastic loop on two sets of backends (encode, step, mesh) with the same images and noise.

    The noise is drawn once on the CPU (`shared_noise`, in `Mega.generate`'s order) and passed pre-scaled
    to both, so the comparison does not depend on which device's generator a backend would use.
    """
    from engines.adapters import example_inputs
    from engines.runner import MegaRunner

    images = example_inputs("encode", batch, cfg, seed=seed)["images"]
    noise = shared_noise(batch * samples, cfg.seq_length, cfg.num_embeddings, steps, temperature, seed)
    results = []
    for backends in (reference, candidate):
        runner = MegaRunner(backends, cfg.seq_length, cfg.num_embeddings, samples, steps, temperature)
        results.append(runner.stochastic(images.to(backends["encode"].device), noise=noise))
    a, b = results
    return {
        name: diff_tensors(name, getattr(a, name), getattr(b, name))
        for name in ("tokens", "verts", "rot6d", "rotmat", "cam_crop")
    }


def _rows(manifest, graph: str) -> int:
    """Rows per crop of a graph's inputs: Q for the per-sample graphs (1 in a deterministic engine)."""
    from engines.adapters import per_sample

    return manifest.samples if per_sample(graph) else 1


def _full_length(backends: dict) -> dict:
    """The backends without the fixed-length step graphs: a loop over them runs the full-length step."""
    from engines.adapters import fixed_step_count

    return {g: b for g, b in backends.items() if fixed_step_count(g) is None}


def measure_parity(folder, manifest, models, batch: int, progress=print) -> dict:
    """Each graph of an engine folder against PyTorch fp32 on the same inputs, and for stochastic
    engines the whole loop; the figures an export writes into its manifest.

    Runs where the artefact can run here: ONNX on onnxruntime (CPU or CUDA), plans on TensorRT when
    a GPU is present. What could not run is recorded as skipped with the reason.
    """
    from engines.adapters import example_inputs
    from engines.backends.base import BackendError
    from engines.load import load_graph_backends
    from engines.models import torch_backends

    try:
        candidates = load_graph_backends(folder, manifest)
    except (BackendError, ImportError) as e:
        progress(f"  parity skipped: {e}")
        return {"skipped": str(e)}
    first = next(iter(candidates.values()))
    graphs = list(manifest.graphs)
    reference = torch_backends(models, graphs, "fp32", manifest.samples, device=first.device)
    out: dict = {"backend": first.name, "reference": "torch fp32", "batch": batch, "graphs": {}}
    for g in graphs:
        feeds = example_inputs(g, batch, models.cfg, _rows(manifest, g), seed=100, device=first.device)
        diffs = compare_backends(reference[g], candidates[g], feeds)
        out["graphs"][g] = summarise(diffs)
        progress(f"  {g:<7} " + "  ".join(d.line().replace("  ", " ") for d in diffs.values()))
    if manifest.mode == "stochastic":
        # the reference loop runs the full-length step: the candidate's fixed-length steps (which its
        # runner takes) must give the same tokens as the graph they stand in for
        diffs = loop_parity(
            _full_length(reference), candidates, models.cfg, manifest.samples, manifest.steps, manifest.temperature,
            batch, seed=7,
        )  # fmt: skip
        fixed = len(candidates) - len(_full_length(candidates))
        out["loop"] = {"seed": 7, "fixed_length_steps": fixed, **summarise(diffs)}
        tokens, verts = diffs["tokens"], diffs["verts"]
        progress(
            f"  loop    Q={manifest.samples} T={manifest.steps} ({fixed} fixed-length steps): "
            f"tokens {tokens.mismatched}/{tokens.numel} differ, verts max {verts.max_abs:.3g}"
        )
    return out


def _side(arg: str):
    """-> (backend name or None, folder or None, graph or None) for one verify argument."""
    from pathlib import Path

    from engines.load import BACKENDS, PLAN_SUFFIXES

    if arg in BACKENDS:
        return arg, None, None
    path = Path(arg)
    if path.is_dir():
        return None, path, None
    if path.is_file():
        if path.suffix == ".onnx":
            return "onnxruntime", path.parent, path.stem
        if path.suffix in PLAN_SUFFIXES:
            return "tensorrt", path.parent, path.stem
        raise ValueError(f"{arg}: not an engine file (.onnx, .plan, .engine)")
    raise ValueError(f"{arg}: not an engine folder, engine file, nor a backend name (torch, onnxruntime, tensorrt)")


def verify_pair(
    reference: str, candidate: str, batch: int = 2, seed: int = 0, threads: int | None = None, progress=print
) -> dict:
    """`mega-rt verify`: both sides on the same inputs, every graph they share (and the stochastic loop)."""
    from engines.adapters import example_inputs
    from engines.load import load_graph_backends
    from engines.manifest import Manifest
    from engines.models import models_from_manifest, torch_backends
    from train.config import MegaConfig, config_from_dict

    sides = [_side(reference), _side(candidate)]
    folders = [f for _, f, _ in sides if f is not None]
    if not folders:
        raise ValueError(
            "name at least one engine folder or file; a backend name alone says what to run, not which engine"
        )
    if len({str(f.resolve()) for f in folders}) > 1:
        m0, m1 = Manifest.read(folders[0]), Manifest.read(folders[1])
        if (m0.mega_config_hash, m0.weights_hash) != (m1.mega_config_hash, m1.weights_hash):
            raise ValueError("the two engines were built from different configs or weights; nothing to compare")
    folder = folders[0]
    manifest = Manifest.read(folder)
    cfg = config_from_dict(MegaConfig, manifest.mega_config, "manifest")
    graphs_wanted = [g for _, _, g in sides if g is not None]
    models = None
    sets = []
    for name, side_folder, _ in sides:
        side_folder = side_folder or folder
        side_manifest = Manifest.read(side_folder)
        if name is None:
            name = "onnxruntime" if side_manifest.format == "onnx" else "tensorrt"
        if name == "torch":
            # the torch side is the fp32 PyTorch model the engine was exported from
            models = models or models_from_manifest(side_manifest)
            backends = torch_backends(models, list(side_manifest.graphs), "fp32", side_manifest.samples)
        else:
            backends = load_graph_backends(side_folder, side_manifest, name, threads=threads)
        sets.append((name, backends))
    (ref_name, ref), (cand_name, cand) = sets
    graphs = [g for g in ref if g in cand and (not graphs_wanted or g in graphs_wanted)]
    if not graphs:
        raise ValueError(f"no graph in common ({', '.join(ref)} vs {', '.join(cand)})")
    progress(f"{ref_name} vs {cand_name}: {folder} ({manifest.precision}, batch {batch}, seed {seed})")
    report: dict = {
        "reference": ref_name,
        "candidate": cand_name,
        "folder": str(folder),
        "batch": batch,
        "seed": seed,
        "graphs": {},
    }
    for g in graphs:
        feeds = example_inputs(g, batch, cfg, _rows(manifest, g), seed=seed)
        diffs = compare_backends(ref[g], cand[g], feeds)
        report["graphs"][g] = {n: d.as_dict() for n, d in diffs.items()}
        for d in diffs.values():
            progress(f"  {g:<7} {d.line()}")
    if {"encode", "step", "mesh"} <= set(graphs):  # the reference's loop on the full-length step
        diffs = loop_parity(
            _full_length(ref), cand, cfg, manifest.samples, manifest.steps, manifest.temperature, batch, seed
        )
        report["loop"] = {n: d.as_dict() for n, d in diffs.items()}
        for d in diffs.values():
            progress(f"  loop    {d.line()}")
    return report
