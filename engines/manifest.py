"""What an engine folder was built from and for, and the checks that refuse a mismatch at load time.

Every export writes `manifest.json` beside its graphs: the MEGA and Mesh-VQ-VAE configs and their
hashes, the weights (file sha256, or the seed of random weights), precision, batch range and
optimization profiles, the stochastic settings, the input normalisation the crops must have, the
software versions, and for TensorRT plans the TensorRT version, GPU name and compute capability.
It also stores the command that rebuilds it, so a refusal can say exactly what to run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_NAME = "manifest.json"
# 2: the deterministic graph is `oneshot` and the camera output `cam_crop`; folders of another version
# are refused with their rebuild command (and rebuilt where mega-rt exports on demand)
FORMAT_VERSION = 2


class EngineMismatch(RuntimeError):
    """An engine that must not be used here (other TensorRT, GPU, config or weights); one line with the fix."""


@dataclass
class Manifest:
    format: str  # onnx | tensorrt | torch-tensorrt
    precision: str  # fp32 | fp16 | bf16
    mode: str  # deterministic | stochastic
    graphs: dict  # name -> {file, sha256, bytes, inputs, outputs, profile, tensor_names?, ops?}
    batch: list  # crops: [min, opt, max]
    mega_config: dict
    mega_config_hash: str
    mesh_config: dict
    mesh_config_hash: str
    weights: dict  # {"mega": {"path", "sha256"} | {"random_seed"}, "mesh": ...}
    weights_hash: str
    normalisation: dict  # {"layout", "mean", "std", "input_hw"}
    software: dict
    rebuild_command: str
    samples: int = 1
    steps: int = 0
    temperature: float = 0.0
    tensorrt: dict | None = None  # {"version", "gpu_name", "compute_capability", "workspace_bytes", "timing_cache"}
    parity: dict = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION

    def write(self, folder: str | Path) -> Path:
        from train.io import write_text_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not self.created:
            self.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return write_text_atomic(folder / MANIFEST_NAME, json.dumps(asdict(self), indent=1, sort_keys=True))

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        """From an engine folder, its manifest.json, or any graph file inside the folder."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        file = folder / MANIFEST_NAME
        if not file.is_file():
            raise EngineMismatch(f"{folder}: no {MANIFEST_NAME} beside the engine; rebuild it with `mega-rt export`")
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise EngineMismatch(f"{file}: unreadable manifest ({e}); rebuild with `mega-rt export`") from None
        if data.get("format_version") != FORMAT_VERSION:
            raise EngineMismatch(
                f"{folder}: manifest format {data.get('format_version')} (this mega-rt reads {FORMAT_VERSION}); "
                f"rebuild: {data.get('rebuild_command', 'mega-rt export ...')}"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def graph_path(self, folder: str | Path, graph: str) -> Path:
        if graph not in self.graphs:
            raise EngineMismatch(
                f"{folder}: this {self.mode} engine has no {graph!r} graph (it has {', '.join(self.graphs)})"
            )
        return Path(folder) / self.graphs[graph]["file"]


def check_runtime(
    manifest: Manifest, folder, tensorrt_version: str, compute_capability: str, gpu_name: str = ""
) -> None:
    """Refuse a TensorRT plan built for another TensorRT version or GPU architecture."""
    if manifest.format not in ("tensorrt", "torch-tensorrt"):
        return
    built = manifest.tensorrt or {}
    problems = []
    if built.get("version") != tensorrt_version:
        problems.append(f"TensorRT {built.get('version')} (this runtime has {tensorrt_version})")
    if built.get("compute_capability") != compute_capability:
        problems.append(
            f"compute capability {built.get('compute_capability')} / {built.get('gpu_name')} "
            f"(this GPU is {compute_capability} / {gpu_name})"
        )
    if problems:
        raise EngineMismatch(
            f"{folder}: engine built for {' and '.join(problems)}; rebuild: {manifest.rebuild_command}"
        )


def check_model(
    manifest: Manifest, folder, mega_config_hash: str | None = None, weights_hash: str | None = None
) -> None:
    """Refuse an engine built from another config or other weights than the caller expects."""
    if mega_config_hash is not None and manifest.mega_config_hash != mega_config_hash:
        raise EngineMismatch(
            f"{folder}: engine built for config {manifest.mega_config.get('name')} ({manifest.mega_config_hash}), "
            f"expected {mega_config_hash}; rebuild: {manifest.rebuild_command}"
        )
    if weights_hash is not None and manifest.weights_hash != weights_hash:
        raise EngineMismatch(
            f"{folder}: engine built from other weights ({manifest.weights_hash}, expected {weights_hash}); "
            f"rebuild: {manifest.rebuild_command}"
        )


def check_files(manifest: Manifest, folder) -> None:
    """Refuse graph files that changed after the export (sha256 against the manifest)."""
    from engines.onnx_export import file_sha256

    for entry in manifest.graphs.values():
        path = Path(folder) / entry["file"]
        if not path.is_file():
            raise EngineMismatch(
                f"{folder}: graph file {entry['file']} is missing; rebuild: {manifest.rebuild_command}"
            )
        if entry.get("sha256") and file_sha256(path) != entry["sha256"]:
            raise EngineMismatch(
                f"{path}: does not match its manifest (edited or partly written); rebuild: {manifest.rebuild_command}"
            )


def as_dict(manifest: Manifest) -> dict:
    return asdict(manifest)
