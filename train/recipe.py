"""Recipes: the ordered runs that make a set of weights, as data, run by one command.

    mega-rt train --recipe configs/recipes/synthetic_demo.yaml [--set STEP.FIELD=VALUE ...] [--dry-run] [--package]

A recipe file holds `runs` (the folder every step's output goes under by default) and `steps`, a list of
named steps run in order. Each step has a `name` and exactly one kind:

- `synth: crops | detection` writes a dataset (`mega-rt synth --dataset` / `--detection-dataset`) into `out`;
- `train: STAGE` is one training run: a base `config` (a `configs/train_<stage>_*.yaml`) and `set`, the
  fields in which this run differs from it; its out_dir is RUNS/NAME unless `set` says otherwise;
- `eval: tokenizer | hmr` is `mega-rt eval`, its figures written to `out` (RUNS/NAME.json by default);
- `package: FOLDER` copies weights into FOLDER as the shipped demo weights (train/demo.py) and measures the
  copies with the named eval steps again; it runs only when asked (`--package`).

A string value may name an earlier step's output as `{STEP}`: a run's out_dir, a dataset's folder, an eval's
JSON file (`init_weights: "{tokenizer_5}/final.pt"`). A step whose outputs are complete is skipped, so an
interrupted recipe continues where it stopped (a run with a checkpoint.pt but no final.pt resumes).
Loading is strict: unknown keys, wrong types, unknown stages, fields a stage's config lacks and references to
steps not defined before are one-line errors naming the file and the step.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from train.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    load_yaml,
    parse_size,
)

STEP_KINDS = ("synth", "train", "eval", "package")
TRAIN_KINDS = ("tokenizer", "backbone", "pretrain", "hmr", "detector")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REFERENCE = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class SynthStep:
    """A synthetic dataset: training crops (`crops`) or person-detection scenes (`detection`)."""

    name: str
    synth: str  # crops | detection
    out: str
    samples: int
    seed: int = 0
    size: str = "1280x720"  # the full frame, WxH
    people: int = 3  # detection: up to this many people per scene
    crop: str = "224x224"  # crops: HxW, the backbone input (256x192 for ViT)

    def __post_init__(self):
        if self.synth not in ("crops", "detection"):
            raise ConfigError(f"synth must be crops or detection, got {self.synth!r}")
        if self.crop not in ("224x224", "256x192"):
            raise ConfigError(f"crop must be 224x224 or 256x192, got {self.crop!r}")
        if self.samples < 1 or self.people < 1:
            raise ConfigError("samples and people must be at least 1")
        parse_size(self.size)

    @property
    def output(self) -> str:
        return self.out


@dataclass(frozen=True)
class EvalStep:
    """`mega-rt eval` of a tokenizer (held-out synthetic meshes) or of MEGA (synthetic crops)."""

    name: str
    eval: str  # tokenizer | hmr
    weights: str
    out: str = ""  # the figures as JSON (default RUNS/NAME.json)
    tokenizer: str = ""  # hmr: the Mesh-VQ-VAE that decodes MEGA's tokens
    crops: tuple[str, ...] = ()  # hmr: crop datasets
    mean_mesh_from: tuple[str, ...] = ()  # crop datasets whose mean mesh is the baseline
    synthetic_meshes: int = 500  # tokenizer
    seed: int = 12345
    samples: tuple[int, ...] = (1, 5, 10)  # hmr: Q of the stochastic mode
    batch: int = 16
    precision: str = "fp32"  # hmr: fp32 | bf16
    threads: int = 0  # 0: torch's default

    def __post_init__(self):
        if self.eval not in ("tokenizer", "hmr"):
            raise ConfigError(f"eval must be tokenizer or hmr, got {self.eval!r}")
        if self.eval == "hmr" and not (self.tokenizer and self.crops):
            raise ConfigError("eval hmr needs tokenizer and crops")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.batch < 1 or self.synthetic_meshes < 1 or any(q < 1 for q in self.samples):
            raise ConfigError("batch, synthetic_meshes and samples must be at least 1")

    @property
    def output(self) -> str:
        return self.out


@dataclass(frozen=True)
class PackageStep:
    """The shipped demo weights: float16 copies of a tokenizer and a MEGA, the detector, and the manifests."""

    name: str
    package: str  # the folder (train/demo_weights)
    tokenizer: str
    mega: str
    detector: str = ""  # a detector run's final.pt
    evals: tuple[str, ...] = ()  # eval steps measured again on the copies (manifest keys: their `eval` kind)

    @property
    def output(self) -> str:
        return self.package


@dataclass(frozen=True)
class TrainStep:
    """One training run: `config` (TrainConfig or DetectorTrainConfig) is the base file with `set` applied."""

    name: str
    stage: str
    base: str  # the base config file
    config: object
    overrides: dict = field(default_factory=dict)  # the resolved fields that differ from the base file

    @property
    def output(self) -> str:
        return self.config.out_dir


@dataclass(frozen=True)
class Recipe:
    path: str
    runs: str
    steps: tuple

    def step(self, name: str):
        return next(s for s in self.steps if s.name == name)


def _config_class(stage: str):
    from train.config import TrainConfig

    if stage == "detector":
        from train.detector import DetectorTrainConfig

        return DetectorTrainConfig
    return TrainConfig


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _settable(step: dict) -> list[str]:
    """The fields `--set NAME.FIELD=VALUE` may change in a raw step."""
    kind = next((k for k in STEP_KINDS if k in step), None)
    if kind == "train":
        stage = step["train"]
        return [f for f in _fields(_config_class(stage)) if f != "stage"] if stage in TRAIN_KINDS else []
    cls = {"synth": SynthStep, "eval": EvalStep, "package": PackageStep}.get(kind)
    return [f for f in _fields(cls) if f not in ("name", kind)] if cls else []


def parse_set(text: str):
    """'STEP.FIELD=VALUE' -> (step, field, value); VALUE is read as YAML (100, 3.0e-4, [a, b], true), and
    kept as written where YAML would not read it as one value (e.g. "{hmr_5}/checkpoint.pt")."""
    import yaml

    key, sep, raw = text.partition("=")
    step, dot, name = key.strip().partition(".")
    if not sep or not dot or not step or not name:
        raise ConfigError(f"--set {text!r}: expected STEP.FIELD=VALUE, e.g. hmr_6.steps=100")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict) or (value is None and raw.strip() not in ("null", "~")):
        value = raw
    return step, name, value


def _expand(value, outputs: dict[str, str], where: str):
    """`{step}` in a string (or in the strings of a list) -> that earlier step's output."""
    if isinstance(value, (list, tuple)):
        return [_expand(v, outputs, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(1) not in outputs:
            raise ConfigError(f"{where}: {{{m.group(1)}}} names no step defined before this one")
        return outputs[m.group(1)]

    return _REFERENCE.sub(sub, value)


def load_recipe(path: str | Path, sets: Sequence[str] = (), threads: int | None = None) -> Recipe:
    """Read, validate and resolve a recipe; `sets` are 'STEP.FIELD=VALUE' overrides of single steps and
    `threads` sets the CPU threads of every training run and evaluation."""
    path = str(path)
    data = load_yaml(path, "recipe")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with `runs` and `steps`")
    unknown = sorted(set(data) - {"runs", "steps"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(str, unknown))} (valid: runs, steps)")
    runs, raw_steps = data.get("runs"), data.get("steps")
    if not isinstance(runs, str) or not runs:
        raise ConfigError(f"{path}: runs: expected the folder of the runs' outputs, e.g. runs/synthetic_demo")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{path}: steps: expected a list of steps")
    steps, names = [], []
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: step {i + 1}: expected a mapping with name and one of {', '.join(STEP_KINDS)}")
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{path}: step {i + 1}: name must be a word of letters, digits and _, got {name!r}")
        if name in names:
            raise ConfigError(f"{path}: step {name}: the name is used by an earlier step")
        kinds = [k for k in STEP_KINDS if k in raw]
        if len(kinds) != 1:
            raise ConfigError(f"{path}: step {name}: give exactly one of {', '.join(STEP_KINDS)}")
        names.append(name)
        steps.append(dict(raw))
    by_name = dict(zip(names, steps))
    overrides = [parse_set(s) for s in sets]
    if threads is not None:
        overrides += [(s["name"], "threads", threads) for s in steps if "train" in s or "eval" in s]
    for step_name, key, value in overrides:
        if step_name not in by_name:
            raise ConfigError(f"--set {step_name}.{key}: {path} has no step {step_name!r} (steps: {', '.join(names)})")
        step = by_name[step_name]
        if key not in _settable(step):
            raise ConfigError(
                f"--set {step_name}.{key}: step {step_name} of {path} has no field {key!r} (fields: {', '.join(_settable(step))})"
            )
        if "train" in step:
            step["set"] = {**(step.get("set") or {}), key: value}
        else:
            step[key] = value
    outputs: dict[str, str] = {}
    resolved = []
    for step in steps:
        where = f"{path}: step {step['name']}"
        built = _train_step(step, runs, outputs, where) if "train" in step else _other_step(step, runs, outputs, where)
        outputs[built.name] = built.output
        resolved.append(built)
    for step in resolved:
        if isinstance(step, PackageStep):
            for name in step.evals:
                if not isinstance(_find(resolved, name), EvalStep):
                    raise ConfigError(f"{path}: step {step.name}: evals: {name!r} is not an eval step of this recipe")
    return Recipe(path, runs, tuple(resolved))


def _find(steps, name):
    return next((s for s in steps if s.name == name), None)


def _train_step(raw: dict, runs: str, outputs: dict, where: str) -> TrainStep:
    unknown = sorted(set(raw) - {"name", "train", "config", "set"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (valid: name, train, config, set)")
    stage, base = raw["train"], raw.get("config")
    if stage not in TRAIN_KINDS:
        raise ConfigError(f"{where}: unknown stage {stage!r} (stages: {', '.join(TRAIN_KINDS)})")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{where}: config: expected the base config file, e.g. configs/train_{stage}_synthetic.yaml")
    overrides = raw.get("set") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: set: expected a mapping of config fields to values")
    cls = _config_class(stage)
    try:
        base_cfg = load_config(base, cls)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if base_cfg.stage != stage:
        raise ConfigError(f"{where}: {base} is a config of stage {base_cfg.stage!r}, not {stage!r}")
    valid = [f for f in _fields(cls) if f != "stage"]
    bad = sorted(set(overrides) - set(valid))
    if bad:
        raise ConfigError(
            f"{where}: set: {', '.join(map(str, bad))}: not a field of the {stage} stage's {cls.__name__}"
        )
    base_dict = config_to_dict(base_cfg)
    values = {**base_dict, "out_dir": f"{runs}/{raw['name']}"}
    values.update({k: _expand(v, outputs, f"{where}: {k}") for k, v in overrides.items()})
    cfg = config_from_dict(cls, values, where)
    resolved = config_to_dict(cfg)
    changed = {k: v for k, v in resolved.items() if v != base_dict[k]}
    return TrainStep(raw["name"], stage, base, cfg, changed)


def _other_step(raw: dict, runs: str, outputs: dict, where: str):
    kind = next(k for k in STEP_KINDS if k in raw)
    cls = {"synth": SynthStep, "eval": EvalStep, "package": PackageStep}[kind]
    values = {k: _expand(v, outputs, f"{where}: {k}") if k != "name" else v for k, v in raw.items()}
    if kind == "eval" and not values.get("out"):
        values["out"] = f"{runs}/{raw['name']}.json"
    return config_from_dict(cls, values, where)


# ---- planning and running --------------------------------------------------------------------------
def status(step, package: bool = False) -> str:
    """done (outputs complete: skipped), resume (a run stopped part-way), run, or skip (a package step
    without --package). Reads only which files exist."""
    if isinstance(step, PackageStep):
        return "run" if package else "skip"
    if isinstance(step, TrainStep):
        out = Path(step.config.out_dir)
        if (out / "final.pt").is_file():
            return "done"
        partial = out / ("yolo/weights/last.pt" if step.stage == "detector" else "checkpoint.pt")
        return "resume" if partial.is_file() else "run"
    done = Path(step.out) / "index.json" if isinstance(step, SynthStep) else Path(step.out)
    return "done" if done.is_file() else "run"


def _describe(step) -> tuple[str, dict]:
    if isinstance(step, TrainStep):
        return (f"train {step.stage}, config {step.base}, out_dir {step.config.out_dir}",
                {k: v for k, v in step.overrides.items() if k != "out_dir"})  # fmt: skip
    kind = next(k for k in STEP_KINDS if hasattr(step, k))
    # what the step sets: required fields, its output, and whatever differs from the defaults
    shown = [f.name for f in dataclasses.fields(step) if f.name not in ("name", kind)
             and (f.default is dataclasses.MISSING or f.name == "out" or getattr(step, f.name) != f.default)]  # fmt: skip
    return f"{kind} {getattr(step, kind)}", {k: getattr(step, k) for k in shown}


def _show(value) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return repr(value) if value == "" else str(value)


def plan(recipe: Recipe, package: bool = False) -> list[str]:
    """The planned steps, one block each: status, name, what it runs, and its settings (a training
    run's: the fields that differ from its base config)."""
    lines = []
    for step in recipe.steps:
        head, values = _describe(step)
        lines.append(f"[{status(step, package)}] {step.name}: {head}")
        lines += [f"    {k}: {_show(v)}" for k, v in values.items()]
    return lines


def _check_finished_run(step: TrainStep) -> None:
    """A finished run is kept only if it was trained with this step's config."""
    if step.stage == "detector":
        return
    from train.checkpoint import read_checkpoint
    from train.loop import OPERATIONAL_KEYS

    final = Path(step.config.out_dir) / "final.pt"
    saved = read_checkpoint(final).get("train_config") or {}
    ours = config_to_dict(step.config)
    diff = [k for k in ours if k not in OPERATIONAL_KEYS and saved.get(k, ours[k]) != ours[k]]
    if diff:
        raise ConfigError(f"{final}: trained with another config than step {step.name} ({', '.join(diff)}); "
                          f"delete {step.config.out_dir} to train it again or set another out_dir")  # fmt: skip


def _check_dataset(step: SynthStep) -> None:
    import json

    index = json.loads((Path(step.out) / "index.json").read_text())
    w, h = parse_size(step.size)
    if step.synth == "crops":
        expected = {
            "samples": step.samples,
            "seed": step.seed,
            "image_wh": [w, h],
            "crop_hw": [int(x) for x in step.crop.split("x")],
        }
    else:
        expected = {"seed": step.seed, "image_wh": [w, h], "max_people": step.people}
        index = {**index, "samples": index.get("images", {}).get("train")}
        expected["samples"] = step.samples
    diff = [k for k, v in expected.items() if index.get(k) != v]
    if diff:
        raise ConfigError(
            f"{step.out}: a dataset made with other settings than step {step.name} ({', '.join(diff)}); delete it to make it again"
        )


def _run_synth(step: SynthStep, progress: bool) -> None:
    from tqdm import tqdm

    w, h = parse_size(step.size)
    if step.synth == "crops":
        from train.synthetic.scene import CropDatasetConfig, write_crop_dataset

        crop_hw = tuple(int(x) for x in step.crop.split("x"))
        cfg = CropDatasetConfig(samples=step.samples, crop_hw=crop_hw, image_wh=(w, h), seed=step.seed)
        with tqdm(total=step.samples, desc=step.name, unit="crop", disable=not progress or None) as bar:
            write_crop_dataset(step.out, cfg, progress=lambda n: bar.update(n - bar.n))
    else:
        from train.synthetic.detection import (
            DetectionDatasetConfig,
            write_detection_dataset,
        )

        cfg = DetectionDatasetConfig.with_validation(
            step.samples, image_wh=(w, h), max_people=step.people, seed=step.seed
        )
        with tqdm(total=cfg.samples + cfg.val_samples, desc=step.name, unit="img", disable=not progress or None) as bar:
            write_detection_dataset(step.out, cfg, progress=lambda n: bar.update(n - bar.n))


def _run_train(step: TrainStep, recipe: Recipe, resume: bool, progress: bool) -> None:
    import yaml

    text = f"# step {step.name} of {recipe.path} (base {step.base})\n" + yaml.safe_dump(
        config_to_dict(step.config), sort_keys=False
    )
    if step.stage == "detector":
        from train.detector import train_detector

        train_detector(step.config, resume=resume, progress=progress, config_text=text)
        return
    from train.loop import train

    train(step.config, resume=resume, progress=progress, config_text=text)


def _evaluate(step: EvalStep, weights: str | None = None, tokenizer: str | None = None) -> dict:
    from train.evaluate import evaluate_hmr_files, evaluate_tokenizer_file

    if step.threads:
        import torch

        torch.set_num_threads(step.threads)
    if step.eval == "tokenizer":
        return evaluate_tokenizer_file(
            weights or step.weights, step.synthetic_meshes, step.seed, step.batch, mean_from=step.mean_mesh_from
        )
    return evaluate_hmr_files(weights or step.weights, tokenizer or step.tokenizer, step.crops, samples=step.samples, seed=step.seed,
                              batch=step.batch, mean_from=step.mean_mesh_from, precision=step.precision)  # fmt: skip


def _run_package(step: PackageStep, recipe: Recipe, echo: Callable[[str], None]) -> None:
    import json

    from train import demo
    from train.io import write_json_atomic

    dest = Path(step.package)
    evals = [recipe.step(name) for name in step.evals]
    figures = {}
    for ev in evals:
        if not Path(ev.out).is_file():
            raise ConfigError(f"{recipe.path}: step {step.name}: {ev.out} missing; run step {ev.name} first")
        figures[ev.eval] = json.loads(Path(ev.out).read_text())
    manifest = demo.export(Path(step.tokenizer), Path(step.mega), dest)
    if step.detector:
        demo.export_detector(Path(step.detector), dest)
    for ev in evals:
        echo(f"    measuring the float16 copies as step {ev.name}")
        weights = dest / (demo.TOKENIZER_FILE if ev.eval == "tokenizer" else demo.MEGA_FILE)
        figures[f"{ev.eval}_demo_fp16"] = _evaluate(ev, str(weights), str(dest / demo.TOKENIZER_FILE))
    manifest.update(demo.evaluation_summary(figures))
    write_json_atomic(dest / demo.MANIFEST_FILE, manifest)


def run(recipe: Recipe, package: bool = False, progress: bool = True, echo: Callable[[str], None] = print) -> None:
    """Run every step in order; complete steps are skipped (after checking they match the recipe)."""
    from train.io import write_json_atomic

    for step in recipe.steps:
        state = status(step, package)
        head, _ = _describe(step)
        echo(f"[{state}] {step.name}: {head}")
        if state == "skip":
            continue
        if isinstance(step, TrainStep):
            if state == "done":
                _check_finished_run(step)
            else:
                _run_train(step, recipe, state == "resume", progress)
        elif isinstance(step, SynthStep):
            if state == "done":
                _check_dataset(step)
            else:
                _run_synth(step, progress)
        elif isinstance(step, EvalStep):
            if state != "done":
                result = _evaluate(step)
                Path(step.out).parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(step.out, result)
        else:
            _run_package(step, recipe, echo)
