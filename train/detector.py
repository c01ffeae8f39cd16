"""Train the person detector of the synthetic demo: an ultralytics YOLO from its model yaml (random
initial weights) on `mega-rt synth --detection-dataset` images.

    mega-rt train detector --config configs/train_detector_synthetic.yaml

Why: the pipeline's detector is ultralytics YOLO; users online get COCO weights by name, but nothing can
be downloaded on an offline machine or in CI, and a detector with random weights finds nobody. This
trains one for synthetic scenes so the whole detector path (YOLO -> ByteTrack -> crops -> MEGA) can be
measured against ground truth. It is not a detector for real footage.

The training loop is ultralytics' own (its optimiser, augmentation and schedule); this module fixes its
inputs, keeps everything under `out_dir`, and writes `out_dir/final.pt` (the best epoch's weights, with
this config embedded under `mega_rt_config`, in SAFE_FORMAT: it loads without running code) and `out_dir/metrics.json` atomically (train/io.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from train.config import ConfigError
from train.io import atomic_write, write_json_atomic


@dataclass(frozen=True)
class DetectorTrainConfig:
    stage: str = "detector"
    out_dir: str = "runs/synthetic/detector"
    data_dir: str = "runs/data/synth_detect"  # mega-rt synth --detection-dataset
    model: str = "yolo11n.yaml"  # an ultralytics model yaml (from scratch) or a .pt to fine-tune
    seed: int = 0
    epochs: int = 30
    imgsz: int = 416
    batch: int = 16
    threads: int = 2
    patience: int = 100  # epochs without improvement before ultralytics stops early
    mosaic: float = 1.0  # ultralytics augmentation: 4-image mosaics (off for the last 10 epochs)

    def __post_init__(self):
        if self.stage != "detector":
            raise ConfigError(f"stage must be 'detector' for a DetectorTrainConfig, not {self.stage!r}")
        for name in ("epochs", "imgsz", "batch", "threads", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.imgsz % 32:
            raise ConfigError(f"imgsz {self.imgsz}: must be a multiple of 32 (the detector's stride)")
        if not self.model.endswith((".yaml", ".yml", ".pt")):
            raise ConfigError(f"model {self.model!r}: an ultralytics model yaml (e.g. yolo11n.yaml) or .pt weights")
        if not 0.0 <= self.mosaic <= 1.0:
            raise ConfigError("mosaic must be in [0, 1]")


class DetectorTrainingError(RuntimeError):
    """One line for the user."""


class DetectorRefused(ValueError):
    """A detector .pt that is not accepted (not found, or a pickle nobody vouched for); the message names
    the file and says what to do."""


# ---- which detector .pt files may be loaded ---------------------------------------------------------
# An ultralytics .pt is a full pickle: loading it can run any code it carries. A .pt is accepted when it
# is in SAFE_FORMAT (read with torch.load(weights_only=True), which runs nothing), when its sha256 is on
# the allow-list of official ultralytics files, or when the user vouches for it (trust_file). The
# pipeline (realtime/detect.py) and `mega-rt train detector` (fine-tuning from a .pt) both ask here.
ALLOWLIST = Path(__file__).with_name("detector_allowlist.json")


def allowed_sha256() -> dict[str, str]:
    """sha256 -> name of the official ultralytics .pt files that may be unpickled."""
    files = json.loads(ALLOWLIST.read_text())["files"]
    return {entry["sha256"]: name for name, entry in files.items()}


def accept_detector_pt(path, trust_file: bool = False, warn=None) -> tuple[str, dict | None]:
    """How a detector .pt may be loaded: ("safe", its SAFE_FORMAT record), ("allow-listed", None) or
    ("trusted", None; `warn` gets one warning line). DetectorRefused otherwise. Nothing of the file
    runs here."""
    from train.assets import sha256_of

    path = Path(path)
    if not path.is_file():
        raise DetectorRefused(f"detector weights {path}: not found")
    record = read_safe_detector(path)
    if record is not None:
        return "safe", record
    if sha256_of(path) in allowed_sha256():
        return "allow-listed", None
    if not trust_file:
        raise DetectorRefused(
            f"{path}: refused: an ultralytics .pt is a pickle that can run code when loaded, and this file's sha256 "
            f"is not on the allow-list of official files ({ALLOWLIST.name}); pass --trust-file if you trust it, "
            "or use an .onnx export or mega-rt's safe detector format (mega-rt train detector writes it)"
        )
    if warn is not None:
        warn(f"warning: {path}: loading an unlisted pickle (--trust-file); it can run code")
    return "trusted", None


def _data_yaml(cfg: DetectorTrainConfig, out_dir: Path) -> Path:
    data = Path(cfg.data_dir).resolve()
    index = data / "index.json"
    if not index.is_file():
        raise DetectorTrainingError(
            f"{data}: not a detection dataset (no index.json); write one with `mega-rt synth --detection-dataset {cfg.data_dir}`"
        )
    classes = json.loads(index.read_text()).get("classes", ["person"])
    path = out_dir / "data.yaml"
    path.write_text(
        f"path: {data}\ntrain: images/train\nval: images/val\nnames:\n"
        + "".join(f"  {i}: {c}\n" for i, c in enumerate(classes))
    )
    return path


def portable_checkpoint(ckpt: dict, root: Path) -> dict:
    """Paths under `root` in ultralytics' records (train_args, the model's args) made relative, and its
    git record (the machine's checkout) dropped, so the weights name no folder of this machine."""
    prefix = str(Path(root).resolve()).rstrip("/") + "/"

    def rel(args):
        if isinstance(args, dict):
            for k, v in args.items():
                if isinstance(v, str) and v.startswith(prefix):
                    args[k] = v[len(prefix) :]
        return args

    rel(ckpt.get("train_args"))
    for key in ("model", "ema"):
        if ckpt.get(key) is not None:
            rel(getattr(ckpt[key], "args", None))
    ckpt.pop("git", None)
    return ckpt


def initial_model(cfg: DetectorTrainConfig, out_dir: Path, accepted: tuple[str, dict | None] | None):
    """The YOLO training starts from: a model yaml (random weights), or the .pt that `accept_detector_pt`
    accepted (`accepted`: its answer). A SAFE_FORMAT record goes to ultralytics as a .pt written here from
    the record (ultralytics' trainer fine-tunes only from a checkpoint file)."""
    from ultralytics import YOLO

    if accepted is None:
        return YOLO(cfg.model, task="detect")
    kind, record = accepted
    if kind != "safe":
        return YOLO(cfg.model, task="detect")
    start = out_dir / "start.pt"  # made from the record in memory: nothing of the user's file is unpickled
    ultralytics_yolo(record).save(str(start))
    return YOLO(str(start), task="detect")


def train_detector(
    cfg: DetectorTrainConfig,
    resume: bool = False,
    progress: bool = True,
    config_text: str = "",
    trust_file: bool = False,
    warn=print,
) -> dict:
    """Train; returns the metrics also written to out_dir/metrics.json. A `.pt` model is fine-tuned only
    when `accept_detector_pt` accepts it (`trust_file`: the user vouches for an unlisted pickle)."""
    import torch

    out_dir = Path(cfg.out_dir)
    run_dir = out_dir / "yolo"
    last = run_dir / "weights" / "last.pt"
    if resume and not last.is_file():
        raise DetectorTrainingError(f"{last}: nothing to resume (run without --resume to start)")
    if resume and (out_dir / "final.pt").is_file():
        # ultralytics would silently start another training on its default data instead
        raise DetectorTrainingError(f"{out_dir}: this run is finished (final.pt); nothing to resume")
    if not resume and run_dir.exists():
        raise DetectorTrainingError(
            f"{run_dir}: a run already lives here; pass --resume to continue it or choose another out_dir"
        )
    accepted = None
    if not resume and cfg.model.endswith(".pt"):  # before anything is written or imported
        try:
            accepted = accept_detector_pt(cfg.model, trust_file, warn)
        except DetectorRefused as e:
            raise DetectorTrainingError(f"model: {e}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    data_yaml = _data_yaml(cfg, out_dir)
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks, no downloads: everything is local
    from ultralytics import YOLO

    torch.set_num_threads(cfg.threads)
    cuda = torch.cuda.is_available()
    start = time.perf_counter()
    if resume:
        try:
            results = YOLO(str(last)).train(resume=True)
        except (AssertionError, ValueError, FileNotFoundError, RuntimeError) as e:
            raise DetectorTrainingError(
                f"{last}: cannot resume ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            ) from None
    else:
        try:
            model = initial_model(cfg, out_dir, accepted)
        except Exception as e:  # ultralytics raises several kinds for a name or file it cannot build
            raise DetectorTrainingError(
                f"model {cfg.model!r}: ultralytics cannot build it ({type(e).__name__}); give a model yaml such as yolo11n.yaml or a local .pt"
            ) from None
        results = model.train(
            data=str(data_yaml), epochs=cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch, device=0 if cuda else "cpu",
            workers=0 if not cuda else 4, seed=cfg.seed, deterministic=True, project=str(out_dir.resolve()), name="yolo",
            exist_ok=False, plots=False, amp=cuda, patience=cfg.patience, mosaic=cfg.mosaic, verbose=progress,
            single_cls=True,
        )  # fmt: skip
    wall_s = time.perf_counter() - start
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        raise DetectorTrainingError(f"{best}: ultralytics wrote no weights (see its output above)")
    # best.pt is ultralytics' own pickle, written by the training above into this run's folder; what
    # leaves the run (final.pt) is the SAFE_FORMAT record, which loads without running code
    ckpt = portable_checkpoint(torch.load(best, map_location="cpu", weights_only=False), Path.cwd())
    model = ckpt.get("ema") or ckpt["model"]
    extra = {"imgsz": cfg.imgsz, "train_args": _plain(ckpt.get("train_args") or {}),
             "mega_rt_config": dataclasses.asdict(cfg), "mega_rt_config_text": config_text}  # fmt: skip
    record = safe_detector_record(model, extra)
    final = write_safe_detector(
        record, out_dir / "final.pt", check=lambda back: check_same_outputs(model, back, cfg.imgsz)
    )
    metrics = {k.replace("(B)", ""): float(v) for k, v in getattr(results, "results_dict", {}).items()}
    metrics.update(
        stage="detector",
        epochs=cfg.epochs,
        wall_s_this_invocation=wall_s,
        device="cuda" if cuda else "cpu",
        weights=str(final),
    )
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


# The file format of a trained detector that loads without running code: `torch.load(weights_only=True)`
# reads only tensors and plain Python values, and the network is rebuilt from its model yaml by
# ultralytics' DetectionModel. An ultralytics .pt, by contrast, is a full pickle of the model object.
SAFE_FORMAT = "mega-rt-yolo-state/1"


def safe_detector_record(model, extra: dict | None = None) -> dict:
    """An ultralytics DetectionModel -> the plain record of SAFE_FORMAT (float16 weights, as ultralytics
    stores them, so the file is no larger than its .pt)."""
    import torch

    state = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().clone()
        for k, v in model.state_dict().items()
    }
    return {
        "format": SAFE_FORMAT,
        "yaml": _plain(model.yaml),
        "names": {int(k): str(v) for k, v in model.names.items()},
        "stride": [float(s) for s in torch.as_tensor(model.stride).flatten()],
        "state_dict": state,
        **(extra or {}),
    }


def _plain(value):
    """Only str / int / float / bool / None / list / dict survive, so weights_only loading accepts the record."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def read_safe_detector(path) -> dict | None:
    """The SAFE_FORMAT record of `path`, or None when the file is anything else (an ultralytics pickle,
    another torch file, not a torch file at all). Never runs code from the file."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore")
            record = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, OSError):
        return None
    if not isinstance(record, dict) or record.get("format") != SAFE_FORMAT:
        return None
    return record


def detection_model(record: dict):
    """The ultralytics DetectionModel of a SAFE_FORMAT record, float32, eval mode; every weight must fit."""
    import copy

    import torch
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import DetectionModel

    cfg = copy.deepcopy(record["yaml"])
    model = DetectionModel(cfg, ch=int(cfg.get("channels", 3)), nc=int(cfg["nc"]), verbose=False)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in record["state_dict"].items()})
    except RuntimeError as e:  # missing / unexpected / misshapen weights
        raise DetectorTrainingError(f"detector weights do not fit their model yaml: {str(e).splitlines()[0]}") from None
    model.names = dict(record["names"])
    model.stride = torch.tensor(record["stride"], dtype=torch.float32)
    model.args = {**DEFAULT_CFG_DICT, "task": "detect", "imgsz": record.get("imgsz", 640)}
    model.task = "detect"
    return model.float().eval()


def ultralytics_yolo(record: dict):
    """An ultralytics YOLO whose network is the record's, so ultralytics' predict runs it as it runs a .pt.
    The YOLO object is made from a model yaml that ultralytics ships (no file, no download), then its
    network replaced by ours."""
    from ultralytics import YOLO

    shell = record["yaml"].get("yaml_file") or "yolo11n.yaml"
    try:
        yolo = YOLO(Path(shell).name, task="detect")
    except Exception:  # a custom yaml ultralytics does not ship
        yolo = YOLO("yolo11n.yaml", task="detect")
    yolo.model = detection_model(record)
    yolo.overrides.update(task="detect", model=Path(shell).name)
    return yolo


def write_safe_detector(record: dict, dest, check=None) -> Path:
    """Write a SAFE_FORMAT record atomically; read it back the safe way and compare every weight first."""
    import torch

    dest = Path(dest)
    with atomic_write(dest) as tmp:
        torch.save(record, tmp)
        back = read_safe_detector(tmp)
        if back is None or back["state_dict"].keys() != record["state_dict"].keys():
            raise DetectorTrainingError(f"{dest}: the written detector does not read back")
        for k, v in record["state_dict"].items():
            if not torch.equal(back["state_dict"][k], v):
                raise DetectorTrainingError(f"{dest}: weight {k} differs after writing")
        if check is not None:
            check(back)
    return dest


def check_same_outputs(model, record: dict, imgsz: int = 320, atol: float = 1e-3) -> float:
    """Largest difference of the head outputs of `model` (an ultralytics DetectionModel) and of the
    record's rebuilt model on one fixed input; an error above `atol` (fp16-stored weights included)."""
    import copy

    import torch

    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    reference = copy.deepcopy(model).float().eval()
    with torch.no_grad():
        want = reference(x)[0]
        got = detection_model(record)(x)[0]
    diff = float((want - got).abs().max())
    if not diff <= atol:
        raise DetectorTrainingError(f"the rebuilt detector differs from its source by {diff:.3g} (> {atol})")
    return diff
