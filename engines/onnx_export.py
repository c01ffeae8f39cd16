"""One graph module -> one checked ONNX file with a dynamic batch dimension.

We use the TorchScript-based exporter (`dynamo=False`): it needs only torch (the dynamo exporter needs
`onnxscript`, which is not a dependency), handles the symbolic batch through every reshape/expand of
these graphs, and gives a plain opset-17..20 graph of ops TensorRT's parser supports (MatMul, Softmax,
LayerNormalization, TopK for the 55-wide sort, GatherElements, ArgMax, Where). Its deprecation
warnings are silenced here and nowhere else.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from pathlib import Path

import torch

DEFAULT_OPSET = 18  # TensorRT 10 and 11 parse 17..20 (11.x: up to 25); LayerNormalization needs >= 17


class ExportError(RuntimeError):
    """An export that failed or produced an invalid graph; the message names the graph."""


def export_graph(
    module: torch.nn.Module,
    feeds: dict[str, torch.Tensor],
    output_names: tuple[str, ...],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    batch_axis_name: str = "batch",
) -> dict:
    """Trace `module(*feeds.values())` and write `path`; every input and output gets a dynamic dim 0.

    Returns a summary: {"file", "bytes", "sha256", "opset", "ops": {op_type: count}, "inputs",
    "outputs"} with (dtype, shape) per tensor, symbolic dims as strings.
    """
    import onnx

    from train.io import atomic_write

    if not 17 <= opset <= 20:
        raise ExportError(f"opset {opset}: use 17..20 (LayerNormalization needs 17; TensorRT 10 parses up to 20)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(feeds)
    dynamic_axes = {n: {0: batch_axis_name} for n in names + list(output_names)}
    module = module.eval()
    with atomic_write(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            # the legacy exporter warns that it is legacy, and that `as_tensor` of a *tensor* is traced as
            # a constant: in sample_step it wraps an input tensor, which stays an input (tests prove it)
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    module,
                    tuple(feeds.values()),
                    str(tmp),
                    dynamo=False,
                    input_names=names,
                    output_names=list(output_names),
                    dynamic_axes=dynamic_axes,
                    opset_version=opset,
                    do_constant_folding=True,
                )
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ExportError(f"{path.name}: ONNX export failed: {first[:300]}") from e
        model = onnx.load(str(tmp))
        if fold_static_topk(model, feeds):
            onnx.save(model, str(tmp))
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:
            raise ExportError(f"{path.name}: exported graph fails onnx.checker: {str(e).splitlines()[0][:300]}") from e
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "opset": opset,
        "ops": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
        "inputs": {v.name: _value_info(v) for v in model.graph.input},
        "outputs": {v.name: _value_info(v) for v in model.graph.output},
    }


def fold_static_topk(model, feeds: dict) -> int:
    """Make every TopK's K a constant when it does not depend on the batch; returns how many.

    The exporter computes K of `torch.sort` (the sampler's 55-wide sort) as Shape -> Gather, which
    ONNX shape inference cannot resolve through the graph's dynamic-batch Concat. TensorRT wants K as
    a build-time constant (<= 3840) and torch-tensorrt falls back to PyTorch on a dynamic K, so we
    evaluate K at two batch sizes with onnxruntime and, when it is the same, store it as an
    initializer. Without onnxruntime the graph is left as it is (TensorRT 10+ also takes a shape-tensor K).
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    constants = {i.name for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "TopK" and n.input[1] not in constants]
    if not nodes:
        return 0
    try:
        import onnxruntime as ort
    except ImportError:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for n in nodes:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(n.input[1], onnx.TensorProto.INT64, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [n.input[1] for n in nodes]
    values = []
    for extra in (0, 1):  # the traced batch, and one more row
        arrays = {k: torch.cat([v, v[:extra]]).numpy() for k, v in feeds.items()}
        values.append(session.run(names, arrays))
    folded = 0
    for node, a, b in zip(nodes, *values):
        if np.array_equal(a, b):
            name = f"{node.name or 'topk'}_static_k"
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(a, dtype=np.int64).reshape(1), name))
            node.input[1] = name
            folded += 1
    if folded:
        _prune_dead_nodes(model)
    return folded


def _prune_dead_nodes(model) -> None:
    """Drop nodes whose outputs nothing reads (the Shape -> Gather chains a folded K leaves behind)."""
    graph_outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            model.graph.node.remove(n)


def _value_info(v) -> dict:
    import onnx

    t = v.type.tensor_type
    dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
    return {"dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
