"""Many videos across workers: `mega-rt batch INPUT... --out-dir DIR [--workers N] [--ray ADDRESS]`.

Each worker (a process of a local pool, or a Ray actor: one per GPU or CPU slot) builds the model once
and runs whole videos through realtime/pipeline.py, one at a time, with a fresh tracker per video. The
driver alone writes the manifest (`DIR/manifest.json`, atomically after every video): per video its
input, outputs, weights (with sha256), settings, status, frame count and the worker that did it.

Exactly once, resumable: the sinks write every output to a temporary name and rename it when whole, so
a killed worker leaves no output that looks complete. A video counts as done only when the manifest
says so with the same settings and weights, *and* its outputs verify: the results npz opens, its status
is ok, its source is this input and its frame count is the input's (capped by --max-frames), and the
overlay mp4 holds as many frames. A rerun skips those and redoes the rest. A worker that dies mid-video
(killed, out of memory) is restarted and the video retried: Ray's max_restarts / max_task_retries, or a
new local pool. Once a video verifies, the temporaries its dead attempts left beside the outputs are
removed (listed in the manifest under `cleaned`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "mega-rt-batch/1"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
LIST_SUFFIXES = (".txt", ".lst")
# the options that change what a video's outputs hold (the rest only change how fast they come)
RESULT_OPTIONS = ("weights", "backbone", "mesh_weights", "random_weights", "config_ref", "backend", "engine", "precision", "samples", "steps",
                  "temperature", "detector", "det_conf", "det_imgsz", "no_track", "max_people", "smooth", "max_frames", "seed", "max_batch")  # fmt: skip


class BatchError(RuntimeError):
    """Bad batch input (a missing file, an empty folder, a name clash): one line for the user."""


@dataclass(frozen=True)
class Job:
    key: str  # the output stem, unique in the batch
    input: str  # absolute path of the video
    results: str
    overlay: str | None


def expand_inputs(inputs, out_dir) -> list[Path]:
    """Video files, folders (their videos, sorted; not recursive) and text files of paths (one a line,
    `#` comments, relative to the text file) -> absolute paths in order, each once."""
    out_dir = Path(out_dir).resolve()
    found: list[Path] = []

    def add_file(p: Path, named_by: str):
        if not p.is_file():
            raise BatchError(f"{named_by}: {p}: no such file")
        found.append(p.resolve())

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            if p.resolve() == out_dir:
                raise BatchError(f"{p}: is the --out-dir; write the outputs to another folder")
            videos = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
            if not videos:
                raise BatchError(f"{p}: holds no video ({', '.join(VIDEO_SUFFIXES)})")
            found += [v.resolve() for v in videos]
        elif p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            for n, line in enumerate(p.read_text().splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if line:
                    q = Path(line)
                    add_file(q if q.is_absolute() else p.parent / q, f"{p} line {n}")
        else:
            add_file(p, "INPUT")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise BatchError("no videos given")
    return unique


def plan_jobs(videos: list[Path], out_dir, overlay: bool) -> list[Job]:
    """One Job per video: outputs `<stem>_mega.npz/.jsonl/.mp4` in out_dir; stems that clash get a
    short hash of their path, so every video keeps its own names from run to run."""
    out_dir = Path(out_dir)
    stems: dict[str, int] = {}
    for v in videos:
        stems[v.stem] = stems.get(v.stem, 0) + 1
    jobs = []
    for v in videos:
        key = v.stem if stems[v.stem] == 1 else f"{v.stem}-{hashlib.sha1(str(v).encode()).hexdigest()[:8]}"
        base = out_dir / f"{key}_mega"
        jobs.append(Job(key, str(v), str(base.with_suffix(".npz")), str(base.with_suffix(".mp4")) if overlay else None))
    return jobs


def count_frames(path) -> int:
    """Frames of a video file, counted from its packets (exact, without decoding)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def verify_outputs(job: Job, max_frames: int | None = None) -> str | None:
    """None when the job's outputs are complete; else why not, in a few words."""
    import numpy as np

    if not Path(job.results).is_file():
        return "no results file"
    try:
        expected = count_frames(job.input)
    except Exception as e:  # noqa: BLE001 - an input that no longer reads cannot be checked
        return f"the input does not read ({e})"
    if max_frames is not None:
        expected = min(expected, max_frames)
    try:
        with np.load(job.results, allow_pickle=False) as z:
            frames, status, source = int(z["num_frames"]), str(z["status"]), str(z["source"])
            rows = int(z["frame"].shape[0])
            if rows and int(z["verts"].shape[0]) != rows:
                return "results arrays of different lengths"
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        return f"results file does not open ({e.__class__.__name__})"
    if status != "ok":
        return f"results status {status}"
    if source != job.input:
        return f"results of another input ({source})"
    if frames != expected:
        return f"results hold {frames} of {expected} frames"
    if job.overlay is not None:
        if not Path(job.overlay).is_file():
            return "no overlay video"
        try:
            shown = count_frames(job.overlay)
        except Exception as e:  # noqa: BLE001
            return f"overlay does not open ({e.__class__.__name__})"
        if shown != expected:
            return f"overlay holds {shown} of {expected} frames"
    return None


def remove_dead_temporaries(job: Job) -> list[str]:
    """Temporaries of a dead attempt beside the job's outputs (no live process holds them)."""
    import shutil

    from realtime.sinks import leftovers

    removed = []
    for target in (job.results, job.overlay):
        if target is None:
            continue
        for p in leftovers(Path(target)):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def file_digest(path) -> str | None:
    if path is None:
        return None
    from realtime.detect import file_sha256

    return file_sha256(Path(path))


def settings_of(kw: dict, frame_batch: int, overlay: bool) -> dict:
    """The settings the manifest records and compares (JSON values)."""
    s = {k: kw.get(k) for k in RESULT_OPTIONS}
    s.update(frame_batch=frame_batch, overlay=overlay)
    return s


def fingerprint(settings: dict, weights: dict) -> str:
    return hashlib.sha256(json.dumps([settings, weights], sort_keys=True, default=str).encode()).hexdigest()


# ---- the worker: one model, videos one after another ------------------------------------------------
class VideoWorker:
    """Builds the stages once from the CLI's option dict `kw`; `run(job)` processes one video. A bad
    video is a result with status failed (no retry); only a dead worker makes the video run again."""

    def __init__(self, kw: dict, frame_batch: int = 4):
        from realtime.cli.common import UserError
        from realtime.cli.video import build_stages

        self.kw = {**kw, "no_track": True}  # tracking is per video (source_tracking)
        self.track = not kw["no_track"]
        self.frame_batch = frame_batch
        try:
            self.detector, self.regressor, self.faces, self.what = build_stages(self.kw, None)
        except UserError as e:
            raise BatchError(e.message) from None

    def pid(self) -> int:
        return os.getpid()

    def run(self, job: Job) -> dict:
        from realtime.pipeline import PipelineOptions, run_pipeline
        from realtime.sinks import SinkError
        from realtime.source_tracking import TrackedDetector
        from realtime.sources import SourceError, VideoSource
        from train.render import RendererUnavailable

        kw = self.kw
        t0 = time.perf_counter()
        out = {"key": job.key, "worker_pid": os.getpid(), "frames": 0, "error": None}
        try:
            source = VideoSource(job.input, max_frames=kw["max_frames"])
            detector = TrackedDetector(self.detector, source.fps, self.track)
            opts = PipelineOptions(source=job.input, out=job.overlay, results=job.results, max_people=kw["max_people"], max_frames=kw["max_frames"],
                                   frame_batch=self.frame_batch, smooth=kw["smooth"], meta={"weights": self.what, **kw["run_meta"]})  # fmt: skip
            summary = run_pipeline(opts, source, detector, self.regressor, self.faces)
            out["frames"] = summary.frames
        except (SourceError, SinkError, RendererUnavailable) as e:
            out.update(status="failed", error=str(e), wall_s=time.perf_counter() - t0)
            return out
        why = verify_outputs(job, kw["max_frames"])
        out.update(status="done" if why is None else "failed", error=why, wall_s=time.perf_counter() - t0)
        return out


_worker: VideoWorker | None = None


def _pool_init(kw: dict, frame_batch: int):
    global _worker
    _worker = VideoWorker(kw, frame_batch)


def _pool_run(job: Job) -> dict:
    return _worker.run(job)


# ---- the driver -------------------------------------------------------------------------------------
@dataclass
class BatchReport:
    done: list  # results of the videos run now
    skipped: list  # keys already complete
    failed: list  # results with status failed
    wall_s: float = 0.0

    def table(self) -> list[str]:
        lines = [f"{'video':<32} {'status':<8} {'frames':>6} {'s':>7} {'fps':>6}"]
        for r in self.done + self.failed:
            fps = r["frames"] / r["wall_s"] if r.get("wall_s") else 0.0
            lines.append(
                f"{r['key'][:32]:<32} {r['status']:<8} {r['frames']:>6} {r.get('wall_s', 0):>7.1f} {fps:>6.2f}"
            )
            if r.get("error"):
                lines.append(f"  {r['key']}: {r['error']}")
        for key in self.skipped:
            lines.append(f"{key[:32]:<32} {'skipped':<8} {'':>6} {'':>7} {'':>6}  (complete)")
        lines.append(
            f"{len(self.done)} done, {len(self.skipped)} already complete, {len(self.failed)} failed in {self.wall_s:.1f} s"
        )
        return lines


class Manifest:
    """DIR/manifest.json: read at start, rewritten atomically after every change (the driver only)."""

    def __init__(self, out_dir):
        self.path = Path(out_dir) / MANIFEST
        self.data = {"schema": MANIFEST_SCHEMA, "videos": {}}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as e:
                raise BatchError(f"{self.path}: not a batch manifest ({e}); move it away to start afresh") from None
            if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
                raise BatchError(f"{self.path}: not a {MANIFEST_SCHEMA} manifest; move it away to start afresh")
            self.data = data

    def entry(self, key: str) -> dict | None:
        return self.data["videos"].get(key)

    def update(self, key: str, **fields) -> None:
        from train.io import atomic_write

        self.data["videos"].setdefault(key, {}).update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        with atomic_write(self.path) as tmp:
            Path(tmp).write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")


def run_batch(jobs: list[Job], kw: dict, out_dir, workers: int = 1, ray_address: str | None = None, frame_batch: int = 4,
              weights: dict | None = None, retries: int = 3, progress=None, echo=print) -> BatchReport:  # fmt: skip
    """Run every job that is not complete yet; the manifest in `out_dir` records each one.

    `workers`: 1 runs in this process; more, a local process pool (one model per worker). `ray_address`:
    "local" (a Ray instance on this machine, unless one is initialised already) or a cluster address;
    one actor per worker. `progress(done, total)` after every video."""
    t0 = time.perf_counter()
    manifest = Manifest(out_dir)
    overlay = bool(jobs) and jobs[0].overlay is not None
    settings = settings_of(kw, frame_batch, overlay)
    weights = weights or {}
    stamp = fingerprint(settings, weights)
    report = BatchReport([], [], [])
    to_run = []
    for job in jobs:
        entry = manifest.entry(job.key)
        if entry and entry.get("status") == "done" and entry.get("fingerprint") == stamp:
            why = verify_outputs(job, kw["max_frames"])
            if why is None:
                report.skipped.append(job.key)
                continue
            echo(f"{job.key}: redoing: {why}")
        elif entry and entry.get("status") == "done":
            echo(f"{job.key}: redoing: the settings or weights changed")
        to_run.append(job)
    for job in to_run:
        manifest.update(job.key, input=job.input, outputs={"results": job.results, "overlay": job.overlay}, status="pending",
                        settings=settings, weights=weights, fingerprint=stamp, error=None)  # fmt: skip

    def finish(job: Job, result: dict):
        if result["status"] == "done":
            result["cleaned"] = remove_dead_temporaries(job)
            report.done.append(result)
        else:
            report.failed.append(result)
        fields = {k: result.get(k) for k in ("status", "frames", "wall_s", "worker_pid", "error")}
        manifest.update(job.key, **fields, cleaned=result.get("cleaned", []))
        if progress is not None:
            progress(len(report.done) + len(report.failed), len(to_run))

    if to_run:
        if ray_address is not None:
            _run_ray(to_run, kw, frame_batch, workers, ray_address, retries, finish)
        elif workers <= 1:
            worker = VideoWorker(kw, frame_batch)
            for job in to_run:
                finish(job, worker.run(job))
        else:
            _run_pool(to_run, kw, frame_batch, workers, retries, finish)
    report.wall_s = time.perf_counter() - t0
    return report


def _dead(job: Job, error: str) -> dict:
    return {"key": job.key, "status": "failed", "frames": 0, "wall_s": 0.0, "worker_pid": None, "error": error}


def _run_pool(jobs, kw, frame_batch, workers, retries, finish):
    """A spawn-started process pool; when a worker dies the pool breaks: a new one takes the unfinished
    videos (each at most `retries` more times)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    attempts = {job.key: 0 for job in jobs}
    left = list(jobs)
    while left:
        with ProcessPoolExecutor(
            workers, mp.get_context("spawn"), initializer=_pool_init, initargs=(kw, frame_batch)
        ) as pool:
            futures = {pool.submit(_pool_run, job): job for job in left}
            for job in left:
                attempts[job.key] += 1
            left = []
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    job = futures[f]
                    try:
                        finish(job, f.result())
                    except BrokenProcessPool:
                        if attempts[job.key] > retries:
                            finish(job, _dead(job, f"its worker died {attempts[job.key]} times"))
                        else:
                            left.append(job)
                    except BatchError as e:  # the worker could not build the model: no video can run
                        raise BatchError(str(e)) from None


def _run_ray(jobs, kw, frame_batch, workers, address, retries, finish):
    """One actor per worker (a GPU each where the cluster has GPUs and the run uses CUDA), each holding
    the model; a task per video. Ray restarts a dead actor (max_restarts) and re-runs the task it was on
    (max_task_retries)."""
    try:
        import ray
    except ImportError:
        raise BatchError("--ray needs Ray: pip install 'mega-rt[ray]'") from None
    from ray.exceptions import RayError

    if not ray.is_initialized():
        try:
            if address == "local":
                ray.init(num_cpus=max(1, workers), include_dashboard=False, logging_level="warning")
            else:
                ray.init(address=address, logging_level="warning")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BatchError(f"--ray {address}: cannot connect ({str(e).splitlines()[0] if str(e) else e})") from None
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpus > 0 and (kw.get("device") or "cuda").startswith("cuda")
    n = max(1, workers if workers > 1 or not use_gpu else gpus)
    actor_cls = ray.remote(num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0, max_restarts=retries, max_task_retries=retries)(VideoWorker)  # fmt: skip
    actors = [actor_cls.remote(kw, frame_batch) for _ in range(n)]
    left = list(jobs)
    running: dict = {}  # ObjectRef -> (actor, job)
    for actor in actors:
        if left:
            job = left.pop(0)
            running[actor.run.remote(job)] = (actor, job)
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, job = running.pop(ready[0])
            try:
                finish(job, ray.get(ready[0]))
            except RayError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, BatchError):
                    raise BatchError(str(cause)) from None
                finish(job, _dead(job, f"gave up after {retries} retries ({str(e).splitlines()[0]})"))
            if left:
                nxt = left.pop(0)
                running[actor.run.remote(nxt)] = (actor, nxt)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


def describe_weights(kw: dict) -> dict:
    """What the manifest records of the weights: where they come from, their files and sha256."""
    from realtime.weights import resolve_for_cli

    chosen = resolve_for_cli(dict(kw), echo=lambda line: None).weights
    return {"source": chosen.source, "description": chosen.description, "mega": str(chosen.mega) if chosen.mega else None,
            "mega_sha256": file_digest(chosen.mega), "mesh": str(chosen.mesh) if chosen.mesh else None,
            "mesh_sha256": file_digest(chosen.mesh), "engine": kw.get("engine")}  # fmt: skip


__all__ = ["BatchError", "Job", "expand_inputs", "plan_jobs", "run_batch", "verify_outputs"]
