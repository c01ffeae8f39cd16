"""One call that measures mega-rt on a GPU machine: `make gpu-check` (or `python -m realtime.gpu_check`).

Made for a machine with one NVIDIA GPU, its own torch, and no internet: what the project needs beyond
that comes prepared beside the checkout by `make gpu-prep` (run where the package registry is reachable):

    .gpu/wheels/   wheels installed with --no-index into .gpu/site (moderngl, glcontext, ...)
    .gpu/assets/   the Mesh-VQ-VAE connection matrices, template and part segmentation
    .gl/           Debian packages of the EGL/GL loaders (libglvnd), unpacked by `make gpu-check`

Every step is a `mega-rt` command run as a child process with a timeout cut to the deadline that is left,
so one hung step cannot take the others with it. After each step the figures so far are written to
OUT/gpu_check.json (atomically), so a run killed at any point keeps what it measured; SIGTERM/SIGINT stop
the current step, write the file and print the summary. The summary table is printed last.

    python -m realtime.gpu_check --out runs/gpu-check --deadline 540 [--device cuda] [--tiny]

`--tiny` (tiny model, small clips, few frames) checks the script itself on any machine, CPU included.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_NAME = "gpu_check.json"


@dataclass
class Step:
    """One measured command: its argv (after `python -m realtime.cli`), how long it may take, and the
    JSON file it writes (read back into the results), if any."""

    name: str
    argv: list[str]
    budget_s: float
    json_out: Path | None = None
    module: str = "realtime.cli"  # or "pytest"; "" runs `python ARGV...`
    fallback: tuple | None = None  # (clip, people, frames, size): write_plain_clip when the step fails


@dataclass
class Outcome:
    name: str
    status: str  # ok | failed | timeout | skipped
    command: str = ""
    rc: int | None = None
    wall_s: float = 0.0
    figures: dict = field(default_factory=dict)
    note: str = ""
    output_tail: str = ""


def versions(device: str) -> dict:
    """Python, torch/CUDA and the GPU, and the optional packages the steps use."""
    import importlib
    import platform

    out = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda or "none"
        if device.startswith("cuda") and torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out["gpu"] = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}"
            out["cudnn"] = str(torch.backends.cudnn.version())
    except ImportError:
        out["torch"] = "missing"
    for mod in (
        "torchvision",
        "cupy",
        "onnxruntime",
        "cv2",
        "moderngl",
        "av",
        "ultralytics",
        "tensorrt",
        "torch_tensorrt",
    ):
        try:
            m = importlib.import_module(mod)
            out[mod] = str(getattr(m, "__version__", "?"))
        except Exception as e:  # an optional package may be missing or fail to load (driver, ABI): record why
            out[mod] = f"unavailable ({type(e).__name__})"
    return out


def plan(out: Path, device: str, tiny: bool) -> list[Step]:
    """The measurements, most important first (a deadline cuts from the end)."""
    cuda = device.startswith("cuda")
    cfg = "mega_tiny" if tiny else "mega_hrnet"
    batches = "1,2" if tiny else "1,8,32,64"
    people = (1, 2) if tiny else (1, 3, 40)
    size = "128x96" if tiny else "1280x720"
    common = ["--config", cfg, "--device", device, "--batch", batches, "--repeats", "2" if tiny else "10"]

    def oneshot(precision: str, mode: str) -> Step:
        # eager: the model as the pipeline serves it; CUDA graphs and compile: the oneshot graph on the torch backend
        how = {"eager": ["model", "--no-stochastic"], "cuda-graphs": ["backend", "--backend", "torch", "--cuda-graphs"],
               "compiled": ["backend", "--backend", "torch", "--compile"]}[mode]  # fmt: skip
        j = out / f"bench_oneshot_{precision}_{mode}.json"
        argv = ["bench", how[0], *common, "--precision", precision, *how[1:], "--json", str(j)]
        return Step(f"oneshot {precision} {mode}", argv, 180 if mode == "compiled" else 90, j)

    first = "fp16" if cuda else "fp32"
    steps = [oneshot(first, "eager")] + ([oneshot(first, "cuda-graphs")] if cuda else [])
    j = out / "bench_stochastic_q8_t5.json"
    stochastic = [
        "bench",
        "model",
        *common,
        "--precision",
        first,
        "--stochastic",
        "--samples",
        "8",
        "--steps",
        "5",
        "--json",
        str(j),
    ]
    steps.append(Step("stochastic Q=8 T=5", stochastic, 90, j))
    steps.append(stochastic_steps(out, cfg, device, first, tiny, cuda_graphs=False))
    for n in people:
        clip = out / f"clip_{n}p.mp4"
        frames = 8 if tiny else (120 if n > 10 else 240)
        synth = ["synth", str(clip), "--people", str(n), "--frames", str(frames), "--size", size, "--seed", str(n)]
        steps.append(Step(f"clip {n} people", synth, 150, fallback=(clip, n, frames, size)))
        for render in (True, False):
            j = out / f"pipeline_{n}p_{'render' if render else 'norender'}.json"
            argv = [
                "bench",
                "pipeline",
                str(clip),
                "--boxes",
                str(clip.with_suffix(".npz")),
                "--random-weights",
                "--config",
                cfg,
                "--device",
                device,
                "--json",
                str(j),
            ]
            steps.append(
                Step(
                    f"pipeline {n}p {'render' if render else 'no render'}",
                    argv + ([] if render else ["--no-render"]),
                    120,
                    j,
                )
            )
    clip = out / f"clip_{people[1]}p.mp4"
    live = ["stream", "--camera", str(clip), "--no-show", "--results", str(out / "live.npz"), "--boxes", str(clip.with_suffix(".npz")),
            "--random-weights", "--config", cfg, "--device", device, "--no-progress"]  # fmt: skip
    steps.append(Step(f"live {people[1]}p paced", live, 90))
    if cuda:
        steps += [
            stochastic_steps(out, cfg, device, first, tiny, cuda_graphs=True),
            oneshot("bf16", "eager"),
            oneshot("bf16", "cuda-graphs"),
            oneshot("fp16", "compiled"),
            oneshot("bf16", "compiled"),
        ]
        # the pipeline replays CUDA graphs by default on a GPU: the same clip without them
        n = people[-1]
        clip = out / f"clip_{n}p.mp4"
        j = out / f"pipeline_{n}p_norender_no_cuda_graphs.json"
        argv = ["bench", "pipeline", str(clip), "--boxes", str(clip.with_suffix(".npz")), "--random-weights", "--config", cfg,
                "--device", device, "--no-render", "--no-cuda-graphs", "--json", str(j)]  # fmt: skip
        steps.append(Step(f"pipeline {n}p no render no cuda graphs", argv, 120, j))
    elif not tiny:
        steps.append(oneshot(first, "compiled"))
    if not tiny:
        steps.append(Step("gpu tests", ["-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"], 150, module="pytest"))
    return steps


def stochastic_steps(out: Path, cfg: str, device: str, precision: str, tiny: bool, cuda_graphs: bool) -> Step:
    """Stochastic Q=8 T=5 on the torch backend, stage by stage: the full-length step graph and the
    fixed-length step graphs (the encoder over the visible tokens only) timed in the same run."""
    tag = "cuda_graphs" if cuda_graphs else "eager"
    j = out / f"bench_stochastic_steps_q8_t5_{tag}.json"
    argv = ["bench", "backend", "--backend", "torch", "--config", cfg, "--device", device, "--precision", precision,
            "--stochastic", "--samples", "8", "--steps", "5", "--batch", "1" if tiny else "1,8",
            "--repeats", "2" if tiny else "5", *(["--cuda-graphs"] if cuda_graphs else []), "--json", str(j)]  # fmt: skip
    return Step(f"stochastic steps Q=8 T=5 {tag.replace('_', '-')}", argv, 150, j)


def write_plain_clip(clip: Path, people: int, frames: int, size: str) -> None:
    """A clip of moving noise with `people` fixed boxes, for when `mega-rt synth` cannot render (no EGL):
    the pipeline's cost per person does not depend on what the pixels show."""
    import cv2
    import numpy as np

    w, h = (int(v) for v in size.split("x"))
    rng = np.random.default_rng(people)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    try:
        for _ in range(frames):
            writer.write(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    finally:
        writer.release()
    cols = max(1, int(np.ceil(np.sqrt(people))))
    bw, bh = w / cols, h / int(np.ceil(people / cols))
    boxes = np.array(
        [[(k % cols) * bw, (k // cols) * bh, (k % cols + 0.9) * bw, (k // cols + 0.9) * bh] for k in range(people)],
        np.float32,
    )
    np.savez(clip.with_suffix(".npz"), frame=np.repeat(np.arange(frames), people).astype(np.int32), boxes_xyxy=np.tile(boxes, (frames, 1)),
             track_id=np.tile(np.arange(people), frames).astype(np.int64))  # fmt: skip


_LATENCY = re.compile(r"latency ms p50 (\d+) p90 (\d+) p99 (\d+)")


def figures_of(step: Step, stdout: str) -> dict:
    """What a finished step measured: its JSON file, else the latency line of `stream`."""
    if step.json_out is not None and step.json_out.is_file():
        try:
            return json.loads(step.json_out.read_text())
        except ValueError as e:
            return {"unreadable_json": str(e)}
    m = _LATENCY.search(stdout)
    return {"latency_ms": dict(zip(("p50", "p90", "p99"), map(float, m.groups())))} if m else {}


class Checker:
    """Runs the steps against a deadline and keeps the results file current."""

    def __init__(self, out: Path, deadline_s: float, env: dict):
        self.out, self.env = out, env
        self.end = time.monotonic() + deadline_s
        self.results: dict = {"versions": {}, "steps": []}
        self.child: subprocess.Popen | None = None
        self.stopped = False

    def save(self) -> None:
        from train.io import write_json_atomic

        write_json_atomic(self.out / RESULTS_NAME, self.results)

    def stop(self, signum, _frame) -> None:
        self.stopped = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def run(self, step: Step) -> Outcome:
        left = self.end - time.monotonic()
        head = [sys.executable, "-m", step.module] if step.module else [sys.executable]
        command = shlex.join(["mega-rt" if step.module == "realtime.cli" else "pytest", *step.argv])
        if self.stopped:
            return Outcome(step.name, "skipped", command, note="stopped by a signal")
        if left < min(20.0, step.budget_s):
            return Outcome(step.name, "skipped", command, note=f"deadline: {left:.0f} s left")
        timeout = min(step.budget_s, left - 5.0)
        t0 = time.monotonic()
        self.child = subprocess.Popen(
            head + step.argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        try:
            output, _ = self.child.communicate(timeout=timeout)
            status = "ok" if self.child.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            self.child.kill()
            output, _ = self.child.communicate()
            status = "timeout"
        rc, self.child = self.child.returncode, None
        if self.stopped and status != "ok":
            status = "skipped"
        o = Outcome(step.name, status, command, rc, round(time.monotonic() - t0, 1), output_tail=output[-2000:])
        if status == "ok":
            o.figures = figures_of(step, output)
        elif status == "timeout":
            o.note = f"killed after {timeout:.0f} s"
        else:
            o.note = (output.strip().splitlines() or ["(no output)"])[-1][:300]
        return o

    def record(self, o: Outcome) -> None:
        self.results["steps"].append(o.__dict__)
        self.save()


def summary_rows(results: dict) -> list[str]:
    """One line per step: status, seconds and the headline figure."""
    rows = [f"{'step':28s} {'status':8s} {'s':>6s}  figure"]
    for s in results["steps"]:
        rows.append(
            f"{s['name']:28s} {s['status']:8s} {s['wall_s']:6.1f}  {headline(s.get('figures') or {}) or s.get('note', '')}"
        )
    return rows


def headline(fig: dict) -> str:
    if "results" in fig:  # `mega-rt bench`: one row per (figure, batch)
        return "; ".join(
            f"{r['name']} b{r['batch']} {r['items_per_s']:.0f}/s" for r in fig["results"][-3:] if "items_per_s" in r
        )
    if "fps" in fig:  # `mega-rt bench pipeline`
        stages = " ".join(f"{k} {v:.1f}" for k, v in (fig.get("stage_ms_per_frame") or {}).items())
        return f"{fig['fps']:.1f} fps, ms/frame: {stages}"
    if "latency_ms" in fig:
        return " ".join(f"{k} {v:.0f} ms" for k, v in fig["latency_ms"].items())
    return ""


def prepared_env(root: Path = ROOT) -> tuple[dict, list[str]]:
    """The child environment: wheels from .gpu/wheels installed into .gpu/site and put on the path, the
    assets from .gpu/assets, unbuffered output. Returns it with notes on what was set up."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    notes = []
    wheels, site = root / ".gpu" / "wheels", root / ".gpu" / "site"
    # one name per project: the folder holds wheels for several Python versions, pip picks the one that fits
    names = sorted({w.name.split("-")[0] for w in wheels.glob("*.whl")}) if wheels.is_dir() else []
    if names and not site.is_dir():
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--find-links",
            str(wheels),
            "--target",
            str(site),
            *names,
        ]
        r = subprocess.run(cmd, capture_output=True, text=True)
        notes.append(
            f"installed {', '.join(names)} into {site}"
            if r.returncode == 0
            else f"wheels not installed: {r.stderr.strip()[-300:]}"
        )
    if site.is_dir():
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    assets = root / ".gpu" / "assets"
    if (assets / "meshconv").is_dir() and "MEGA_RT_ASSETS" not in os.environ:
        env["MEGA_RT_ASSETS"] = str(assets)
        notes.append(f"assets from {assets}")
    return env, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure mega-rt on this machine's GPU within a deadline.")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"), help="folder of the results (JSON, clips)")
    parser.add_argument("--deadline", type=float, default=540.0, help="seconds for everything (default 540)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when torch sees a GPU)")
    parser.add_argument("--tiny", action="store_true", help="tiny model and clips: checks this script on any machine")
    args = parser.parse_args(argv)
    started = time.monotonic()  # the deadline counts the set-up too
    if args.deadline <= 0:
        parser.error("--deadline must be positive")
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    env, notes = prepared_env()
    checker = Checker(args.out, args.deadline - (time.monotonic() - started), env)
    signal.signal(signal.SIGTERM, checker.stop)
    signal.signal(signal.SIGINT, checker.stop)
    checker.results["versions"] = versions(device)
    checker.results["device"] = device
    checker.results["setup"] = notes
    checker.save()
    for k, v in checker.results["versions"].items():
        print(f"{k:16s} {v}", flush=True)
    for line in notes:
        print(f"setup: {line}", flush=True)
    for step in plan(args.out.resolve(), device, args.tiny):
        o = checker.run(step)
        if o.status == "failed" and step.fallback is not None:
            write_plain_clip(*step.fallback)
            o.note = f"{o.note}; used a plain clip with fixed boxes instead"
        checker.record(o)
        print(f"[{o.status}] {o.name} ({o.wall_s:.0f} s): {o.command}", flush=True)
        if o.status in ("failed", "timeout"):
            print("    " + o.note, flush=True)
    print("\n" + "\n".join(summary_rows(checker.results)))
    print(f"\nresults: {args.out / RESULTS_NAME}")
    return 130 if checker.stopped else 0


if __name__ == "__main__":
    sys.exit(main())
