"""The training loop: explicit, short, the same for every stage (train/stages.py says what to train).

    for step in steps:
        for micro-step in grad_accum:       (DDP syncs gradients on the last one only)
            batch -> stage.loss -> loss / grad_accum -> backward
        unscale (fp16), clip, optimiser step, scheduler step, stage.after_step
        log every `log_every`, checkpoint every `checkpoint_every` and on SIGTERM / SIGINT

Runs alone or under `torchrun` (one process per GPU, or several CPU processes with gloo). Everything a
resumed run needs is in `OUT/checkpoint.pt`: weights, optimiser, scheduler, grad scaler, every
process's RNG state, the step (which fixes the data position: train/data/mixing.py) and the config.
Outputs: OUT/final.pt (the trained artefact with its config, loadable by train.checkpoint),
OUT/scalars.jsonl (+ TensorBoard when installed), OUT/metrics.json, OUT/config.yaml.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from pathlib import Path

import torch

from train import distributed
from train.config import TrainConfig, config_from_dict, config_to_dict
from train.io import atomic_write, write_json_atomic, write_text_atomic

CHECKPOINT = "checkpoint.pt"
# keys that may differ between a run and its resumption (they do not change the computation)
OPERATIONAL_KEYS = {"threads", "workers", "log_every", "checkpoint_every", "device", "out_dir"}


class TrainingError(RuntimeError):
    """A run that cannot start or continue as asked; the message names the file and the fix."""


class Interrupted(RuntimeError):
    """SIGTERM / SIGINT: a checkpoint was written; `--resume` continues."""


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over `warmup` steps, then a cosine to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def base_lr(cfg: TrainConfig) -> float:
    """The learning rate of the run (see TrainConfig.lr_reference_batch)."""
    return cfg.lr * cfg.batch_size / cfg.lr_reference_batch if cfg.lr_reference_batch > 0 else cfg.lr


def make_optimizer(stage, cfg: TrainConfig) -> torch.optim.Optimizer:
    lr = base_lr(cfg)
    groups = [{"params": g["params"], "lr": lr * g["lr_scale"]} for g in stage.param_groups if g["params"]]
    fused = {"fused": True} if all(p.is_cuda for g in groups for p in g["params"]) else {}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **fused)


def make_scheduler(optimizer, cfg: TrainConfig):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    )


def autocast_dtype(cfg: TrainConfig, device: torch.device):
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(
    path: Path, model, optimizer, scheduler, scaler, step: int, cfg: TrainConfig, rng: list
) -> None:
    """Atomic: a kill at any moment leaves the previous checkpoint or the new one, never half of one."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,  # one entry per process, in rank order
        "step": step,  # the next step to run; the data position is step * batch_size samples
        "samples": step * cfg.batch_size,
        "config": config_to_dict(cfg),
        "config_type": "TrainConfig",
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def _check_resumable(saved: dict, cfg: TrainConfig, path: Path) -> None:
    old = config_from_dict(TrainConfig, saved, f"{path} (embedded config)")
    diff = [k for k in config_to_dict(cfg) if k not in OPERATIONAL_KEYS and getattr(old, k) != getattr(cfg, k)]
    if diff:
        raise TrainingError(
            f"{path}: was written with a different config ({', '.join(diff)}); resume with the same config or use another out_dir"
        )


class _Signals:
    """Turns SIGTERM / SIGINT into a flag checked between steps (a checkpoint, then a clean exit)."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners): no handler
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Scalars:
    """scalars.jsonl always; TensorBoard too when it is installed."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.enabled = enabled
        self.file = open(out_dir / "scalars.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                pass

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None,
          config_text: str | None = None) -> dict:  # fmt: skip
    """Run (or continue) one stage; returns the final metrics. `stop_after` ends early after that many
    steps of this invocation, checkpointing as a signal would (for tests and time-boxed jobs)."""
    info = distributed.setup(cfg.device)
    try:
        return _train(cfg, info, resume, progress, stop_after, config_text)
    finally:
        distributed.teardown()


def _train(cfg, info, resume, progress, stop_after, config_text) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    from train.data.batches import StepSampler
    from train.stages import build_stage

    started = time.perf_counter()  # the whole invocation: building the data (e.g. tokenizing) included
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    per_process = cfg.batch_size // (cfg.grad_accum * info.world)
    if per_process * cfg.grad_accum * info.world != cfg.batch_size:
        raise TrainingError(
            f"batch_size {cfg.batch_size} must be divisible by grad_accum {cfg.grad_accum} x processes {info.world}"
        )
    out_dir = Path(cfg.out_dir)
    ckpt_path = out_dir / CHECKPOINT
    saved = None
    if resume:
        if not ckpt_path.is_file():
            raise TrainingError(f"{ckpt_path}: nothing to resume (run without --resume to start)")
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        _check_resumable(saved["config"], cfg, ckpt_path)
    elif ckpt_path.is_file():
        raise TrainingError(
            f"{ckpt_path}: a run already lives in {out_dir}; pass --resume to continue it or choose another out_dir"
        )
    if info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if config_text is not None:
            write_text_atomic(out_dir / "config.yaml", config_text)

    # every process starts from the same weights; dropout then draws from per-process streams
    torch.manual_seed(cfg.seed)
    stage = build_stage(cfg, info)
    torch.manual_seed(cfg.seed + 7919 * info.rank)
    device = info.device
    model = stage.module.to(device)
    for helper in stage.frozen:
        helper.to(device)
    optimizer = make_optimizer(stage, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    dtype = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    start = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        start = int(saved["step"])
        if len(saved["rng"]) == info.world:
            _set_rng_state(saved["rng"][info.rank])
    trained = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if info.world > 1
        else model
    )
    trained.train(stage.train_mode)
    stop = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    loader = torch.utils.data.DataLoader(
        stage.dataset, sampler=StepSampler(start, stop, cfg.batch_size, cfg.grad_accum, info.rank, info.world),
        batch_size=None, num_workers=cfg.workers, pin_memory=device.type == "cuda",
        # its own generator: creating the iterator draws a seed, which must not move the global RNG
        # that dropout uses (a resumed run creates its iterator at a different point)
        generator=torch.Generator().manual_seed(cfg.seed),
    )  # fmt: skip
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    params = [p for g in optimizer.param_groups for p in g["params"]]

    scalars = _Scalars(out_dir, info.main)
    bar = None
    if progress and info.main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=stage.name, unit="step", dynamic_ncols=True)
    window: dict[str, float] = {}
    window_steps, window_start = 0, time.perf_counter()
    loop_started, last_terms, step = time.perf_counter(), {}, start
    batches = iter(loader)
    try:
        with _Signals() as signals:
            for step in range(start, stop):
                optimizer.zero_grad(set_to_none=True)
                for micro in range(cfg.grad_accum):
                    batch = to_device(next(batches), device)
                    sync = micro == cfg.grad_accum - 1 or info.world == 1
                    with contextlib.nullcontext() if sync else trained.no_sync(), autocast():
                        terms = stage.loss(trained, batch)
                    scaler.scale(terms["loss"] / cfg.grad_accum).backward()
                    for k, v in terms.items():  # tensors: no device sync until the log step
                        window[k] = window.get(k, 0.0) + v.detach() / cfg.grad_accum
                scaler.unscale_(optimizer)
                if cfg.clip_grad_norm > 0:
                    norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
                    window["grad_norm"] = window.get("grad_norm", 0.0) + norm.detach()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if stage.after_step is not None:
                    for k, v in stage.after_step(step).items():
                        window[k] = window.get(k, 0.0) + v
                window_steps += 1
                done = step + 1
                if done % cfg.log_every == 0 or done == stop:
                    elapsed = time.perf_counter() - window_start
                    values = distributed.all_mean({k: float(v) / window_steps for k, v in window.items()}, info)
                    values["lr"] = optimizer.param_groups[-1]["lr"]
                    values["samples_per_s"] = window_steps * cfg.batch_size / max(elapsed, 1e-9)
                    scalars.write(done, values)
                    last_terms = values
                    if bar is not None:
                        bar.set_postfix(loss=f"{values['loss']:.4f}", sps=f"{values['samples_per_s']:.1f}")
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                if bar is not None:
                    bar.update(1)
                interrupted = _any(signals.received is not None, info)
                if done % cfg.checkpoint_every == 0 or interrupted or done == stop:
                    _checkpoint(ckpt_path, model, optimizer, scheduler, scaler, done, cfg, info)
                if interrupted:
                    raise Interrupted(
                        f"stopped by signal at step {done}; checkpoint {ckpt_path}; continue with --resume"
                    )
    finally:
        if bar is not None:
            bar.close()
        scalars.close()
    now = time.perf_counter()
    metrics = {
        "stage": stage.name, "steps_done": stop, "steps_total": cfg.steps, "samples_seen": stop * cfg.batch_size,
        "processes": info.world, "device": str(device), "wall_s_this_invocation": now - started,
        "wall_s_training_steps": now - loop_started,
        "samples_per_s": (stop - start) * cfg.batch_size / max(now - loop_started, 1e-9), "final": last_terms,
    }  # fmt: skip
    if info.main and stop == cfg.steps:
        from train.checkpoint import save_checkpoint

        artefact, artefact_cfg = stage.export()
        save_checkpoint(
            out_dir / "final.pt",
            artefact,
            artefact_cfg,
            stage=stage.name,
            train_config=config_to_dict(cfg),
            steps=cfg.steps,
        )
        write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


def _any(flag: bool, info) -> bool:
    """True on every process when any process saw a signal (all must stop at the same step)."""
    if info.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _checkpoint(path, model, optimizer, scheduler, scaler, step, cfg, info) -> None:
    rng = distributed.gather_objects(_rng_state(), info)
    if info.main:
        save_training_checkpoint(path, model, optimizer, scheduler, scaler, step, cfg, rng)
    if info.world > 1:
        torch.distributed.barrier()
