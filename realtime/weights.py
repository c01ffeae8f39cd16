"""Which weights and which detector a run uses, decided once for `video`, `stream`, `bench pipeline` and
the Python API, and said out loud:

    --weights PATH  ->  official weights in the cache  ->  first-use download (when online)
                    ->  the demo weights, with a warning that they know synthetic people only

`--weights official|demo` and `--backbone` choose explicitly; `--no-download` or MEGA_RT_OFFLINE=1 turn
the download off. The detector's default (ultralytics' yolo11n.pt) is fetched by ultralytics into the
cache, never into the working folder. The choice travels into the results file (`weights_source`,
`weights_warning`, `detector_source`, `detector_warning`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from realtime import official
from realtime.infer import WeightsMissing

DEMO_WARNING = (
    "the demo weights were trained on synthetic people only; for real footage run `mega-rt fetch --weights official`"
)
DEMO_DETECTOR_WARNING = (
    "the demo detector was trained on synthetic people only; for real footage use --detector yolo11n.pt "
    "(fetched by ultralytics into the cache on first use)"
)
RANDOM_WARNING = "random weights - the meshes are noise; for real ones run `mega-rt fetch --weights official`"
DEFAULT_DETECTOR = "yolo11n.pt"
DEMO_DETECTOR_IMGSZ = 320


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass(frozen=True)
class WeightsChoice:
    """The MEGA and Mesh-VQ-VAE files a run loads (None: random weights) and where they come from."""

    mega: Path | None
    mesh: Path | None
    source: str  # official | demo | path | random
    description: str
    warning: str = ""
    backbone: str | None = None

    def meta(self) -> dict:
        return {"weights_source": self.source, "weights_warning": self.warning}


@dataclass(frozen=True)
class DetectorChoice:
    spec: str | None  # what realtime.detect.build_detector gets (None with --boxes)
    source: str  # ultralytics | demo | path | full-frame | boxes
    warning: str = ""
    imgsz: int | None = None  # an input size the weights need (the demo detector's 320), else None

    def meta(self) -> dict:
        return {"detector_source": self.source, "detector_warning": self.warning}


@dataclass(frozen=True)
class Resolution:
    """What `mega-rt info` prints and a run records."""

    weights: WeightsChoice
    detector: DetectorChoice

    def warnings(self) -> list[str]:
        return [f"warning: {w}" for w in (self.weights.warning, self.detector.warning) if w]


def demo_choice() -> WeightsChoice:
    from train.checkpoint import CheckpointError
    from train.demo import demo_weights

    try:
        mega, mesh = demo_weights()
    except CheckpointError as e:
        raise WeightsMissing(f"{e}; or get the official weights: `mega-rt fetch --weights official`") from None
    return WeightsChoice(mega, mesh, "demo", "demo weights (synthetic training, train/demo_weights)", DEMO_WARNING)


def official_choice(backbone: str, paths: tuple[Path, Path]) -> WeightsChoice:
    return WeightsChoice(paths[0], paths[1], "official", f"official MEGA-{backbone} ({paths[0]})", "", backbone)


def resolve_weights(
    weights: str | None = None,
    backbone: str | None = None,
    mesh_weights: str | None = None,
    download: bool | None = None,
    random_weights: bool = False,
    echo: Callable[[str], None] = _stderr,
    progress_factory=None,
    api: str | None = None,
) -> WeightsChoice:
    """The weights a run loads. `weights`: None (the default order), 'official', 'demo' or a file.

    `download=None` means: unless MEGA_RT_OFFLINE is set."""
    if download is None:
        download = not official.offline()
    if random_weights:
        if weights:
            raise WeightsMissing("--random-weights and --weights exclude each other")
        return WeightsChoice(None, None, "random", "random weights", RANDOM_WARNING)
    if backbone is not None and backbone not in official.BACKBONES:
        raise WeightsMissing(f"--backbone {backbone}: expected one of {', '.join(official.BACKBONES)}")
    if backbone is not None and weights not in (None, "official"):
        raise WeightsMissing(
            "--backbone chooses among the official weights; it goes with --weights official or no --weights"
        )
    bb = backbone or "hrnet"
    if weights == "demo":
        return _with_mesh(demo_choice(), mesh_weights)
    if weights not in (None, "official"):
        return _path_choice(Path(weights), mesh_weights)
    paths = official.installed(bb)
    if paths is None and download:
        try:
            echo(
                f"fetching the official MEGA-{bb} and Mesh-VQ-VAE weights from Zenodo record {official.RECORD_ID} "
                f"({official.api_url(api)}) into {official.weights_dir()} (once; --no-download or MEGA_RT_OFFLINE=1 to skip)"
            )
            fetched = official.fetch_official((bb,), api=api, echo=echo, progress_factory=progress_factory)
            paths = (fetched[official.mega_relpath(bb)], fetched[official.MESH])
        except official.OfficialError as e:
            if weights == "official":
                raise WeightsMissing(str(e)) from None
            echo(f"warning: the official weights could not be fetched ({e})")
    if paths is not None:
        return _with_mesh(official_choice(bb, paths), mesh_weights)
    if weights == "official":
        raise WeightsMissing(
            f"the official MEGA-{bb} weights are not in {official.weights_dir()}"
            f"{' and downloading is off' if not download else ''}: run `mega-rt fetch --weights official --backbone {bb}` "
            f"(or `--from DIR` with files copied from {official.RECORD_URL})"
        )
    return _with_mesh(demo_choice(), mesh_weights)


def _with_mesh(choice: WeightsChoice, mesh_weights: str | None) -> WeightsChoice:
    if mesh_weights is None:
        return choice
    from dataclasses import replace

    return replace(choice, mesh=Path(mesh_weights))


def _path_choice(path: Path, mesh_weights: str | None) -> WeightsChoice:
    if not path.is_file():
        raise WeightsMissing(f"--weights {path}: no such file (or give 'official' or 'demo')")
    mesh = Path(mesh_weights) if mesh_weights else None
    if mesh is None:
        # a file in the official layout brings its tokenizer: CVQMAE/mega_* beside MESH_VQVAE/
        beside = path.parent.parent / official.MESH
        if path.parent.name == "CVQMAE" and beside.is_file():
            mesh = beside
        elif (cached := official.weights_dir() / official.MESH).is_file() and official.check_installed(
            official.weights_dir(), official.MESH, full=False
        ) == "ok":
            mesh = cached
    return WeightsChoice(path, mesh, "path", f"weights {path}", "")


def resolve_detector(
    spec: str | None,
    boxes: str | None = None,
    download: bool | None = None,
    echo: Callable[[str], None] = _stderr,
) -> DetectorChoice:
    """The detector weights to pass to realtime.detect.build_detector.

    'demo' names the bundled detector of synthetic people; a bare ultralytics name (yolo11n.pt) is
    looked up in, and fetched by ultralytics into, `<cache>/detectors/`."""
    from train.demo import DEMO_DIR, DETECTOR_FILE

    if download is None:
        download = not official.offline()
    demo = DEMO_DIR / DETECTOR_FILE
    if boxes:
        return DetectorChoice(None, "boxes")
    if spec in (None, "", "full-frame"):
        return DetectorChoice("full-frame", "full-frame")
    if spec == "demo" or (Path(spec).is_file() and Path(spec).resolve() == demo.resolve()):
        if not demo.is_file():
            raise WeightsMissing(
                f"{demo}: the bundled detector is not installed; use --detector full-frame or --boxes FILE"
            )
        return DetectorChoice(str(demo), "demo", DEMO_DETECTOR_WARNING, DEMO_DETECTOR_IMGSZ)
    p = Path(spec)
    if p.exists() or p.parent != Path(".") or p.suffix != ".pt":
        return DetectorChoice(spec, "path")
    from train.assets import cache_dir

    cached = cache_dir() / "detectors" / p.name
    if cached.is_file():
        return DetectorChoice(str(cached), "ultralytics")
    offline_hint = (
        f"for synthetic clips use the bundled detector (--detector demo --det-imgsz {DEMO_DETECTOR_IMGSZ}), "
        f"or --detector full-frame, or --boxes FILE"
    )
    if not download:
        raise WeightsMissing(
            f"detector {spec}: not in {cached.parent} and downloading is off (--no-download / MEGA_RT_OFFLINE); "
            f"copy it there, or {offline_hint}"
        )
    try:
        from ultralytics.utils.downloads import attempt_download_asset
    except ImportError as e:
        raise WeightsMissing(f"detector {spec}: ultralytics is not installed ({e}); {offline_hint}") from None
    echo(f"fetching detector {spec} (ultralytics' release assets) into {cached.parent}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        attempt_download_asset(str(cached))
    except Exception as e:  # ultralytics raises many kinds on a failed download
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsMissing(f"detector {spec}: the download failed ({msg[:160]}); {offline_hint}") from None
    if not cached.is_file():
        raise WeightsMissing(f"detector {spec}: the download left no file at {cached}; {offline_hint}")
    return DetectorChoice(str(cached), "ultralytics")


def load_regressor_file(path: str | Path):
    """A J_regressor_*.npy / .npz (J x 6890, e.g. h36m 17, smpl 24) as a float32 tensor; never pickle."""
    from train.joints import RegressorError, load_joint_regressor

    path = Path(path)
    if path.suffix.lower() not in (".npy", ".npz"):
        raise RegressorError(
            f"--regressor {path}: expected a J_regressor_*.npy or .npz file (J x 6890 floats); "
            "SMPL model pickles are not read here"
        )
    return load_joint_regressor(path)


def resolve_for_cli(kw: dict, echo: Callable[[str], None] = _stderr) -> Resolution:
    """The shared model options of video / stream / bench pipeline -> weights and detector choices
    (`Resolution.warnings` to print once the stages are built)."""
    download = not kw.get("no_download") and not official.offline()
    progress = _tqdm_progress if sys.stderr.isatty() else None
    weights = None if kw.get("engine") else resolve_weights(
        kw.get("weights"), kw.get("backbone"), kw.get("mesh_weights"), download, kw.get("random_weights", False),
        echo, progress,
    )  # fmt: skip
    detector = resolve_detector(kw.get("detector"), kw.get("boxes"), download, echo)
    return Resolution(weights or WeightsChoice(None, None, "engine", f"engine {kw.get('engine')}"), detector)


def _tqdm_progress(name: str):
    from tqdm import tqdm

    bar = tqdm(desc=name, unit="B", unit_scale=True, unit_divisor=1024, leave=False)

    def update(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()
        if total is not None and done >= total:
            bar.close()

    return update
