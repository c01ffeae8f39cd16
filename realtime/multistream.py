"""Many live streams into one batched model: `mega-rt stream SRC [SRC ...]`.

    reader thread per stream --newest frame--> [main: one tick = detect -> crop -> MEGA -> pose -> collect
        over the newest frame of every stream that has one] --(stream, result)--> render thread --> sink thread
        (per stream: tracker, smoother, overlay mp4, results file, counters)

Each stream is a live VideoSource (a camera, a URL, or a file played at its fps) that keeps only its
newest frame and counts the ones it replaced (`dropped`). A tick takes at most `max_batch` frames, one per
stream, in round-robin order that starts after the last stream served, so no stream starves when the
batch is full; the people of all of them go through one detector call and one MEGA call (frames of
different sizes are cropped per size and still share the MEGA call). Tracking, smoothing, outputs and
latency are per stream. A live stream that ends is re-opened up to `retries` times (with a growing
pause), on its own thread, while the others go on; a file that ends is done. One stream failing (its
source gone for good, its disk full) is reported and the others continue.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from realtime.pipeline import END, end_queue
from realtime.timing import Timer

RUNNING, RECONNECTING, ENDED, FAILED = "running", "reconnecting", "ended", "failed"
SUMMARY_SCHEMA = "mega-rt-streams/1"


@dataclass(frozen=True)
class StreamOptions:
    sources: tuple[str, ...]
    out_dir: str | None = None  # one overlay mp4 and one results npz per stream
    overlay: bool = True  # write the overlay mp4 (needs EGL)
    results: bool = True
    max_people: int | None = None
    max_frames: int | None = None  # per stream
    max_batch: int | None = None  # frames per tick (None: one per stream)
    track: bool = True
    smooth: bool = False
    smooth_min_cutoff: float = 1.0
    smooth_beta: float = 0.5
    retries: int = 3  # re-opens of a live stream after it ends, per outage
    retry_delay_s: float = 1.0  # pause before the first re-open; the k-th waits k times as long
    queue_size: int = 8
    meta: dict = field(default_factory=dict)  # extra fields of every results file


def is_live_spec(spec: str) -> bool:
    """A camera index or a URL: its end is an outage to reconnect, not the end of the input."""
    from realtime.video_read import is_camera, is_url

    return is_camera(spec) or is_url(spec)


def stream_names(sources) -> list[str]:
    """A file-name-safe, unique name per stream: its position and what it is (`0_street`, `1_camera0`)."""
    names = []
    for i, spec in enumerate(sources):
        spec = str(spec)
        if spec.isdigit():
            base = f"camera{spec}"
        elif "://" in spec:
            base = spec.split("://", 1)[1].rstrip("/").split("?")[0].replace("/", "_")
        else:
            base = Path(spec).stem
        names.append(f"{i}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', base)[:48] or 'stream'}")
    return names


def output_paths(out_dir: str, name: str, overlay: bool, results: bool) -> dict:
    d = Path(out_dir)
    return {"overlay": str(d / f"{name}_mega.mp4") if overlay else None,
            "results": str(d / f"{name}_mega.npz") if results else None}  # fmt: skip


class _Stream:
    """One stream's source, tracker, smoother, sinks and counters (touched by the main thread, its
    re-open thread and the sink thread; `lock` guards the source swap and the status)."""

    def __init__(self, index: int, spec: str, name: str, source, opts: StreamOptions):
        from realtime.smooth import OneEuroSmoother
        from realtime.source_tracking import SourceTracker

        self.index, self.spec, self.name = index, spec, name
        self.live_spec = is_live_spec(spec)
        self.source = source
        self.fps = source.fps
        self.size_wh = (source.width, source.height)
        self.tracker = SourceTracker(source.fps, opts.track)
        self.smoother = OneEuroSmoother(source.fps, opts.smooth_min_cutoff, opts.smooth_beta) if opts.smooth else None
        self.sinks: list = []
        self.outputs: dict = {}
        self.lock = threading.Lock()
        self.status = RUNNING
        self.error: str | None = None
        self.sink_failed = False
        self.taken = 0  # frames handed to a tick
        self.written = 0  # frames through the sinks
        self.people = 0
        self.dropped_before = 0  # counters of the source incarnations already closed
        self.skipped_before = 0
        self.reconnects = 0
        self.index_offset = 0  # a re-opened source counts from 0 again; the results keep counting
        self.next_index = 0
        self.latencies_ms: list[float] = []
        self.thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        return self.dropped_before + (self.source.dropped if self.source is not None else 0)

    @property
    def skipped(self) -> int:
        return self.skipped_before + (self.source.skipped if self.source is not None else 0)

    def retire_source(self):
        """Stop and close the current source, keeping its counters."""
        src, self.source = self.source, None
        if src is not None:
            src.stop()
            self.dropped_before += src.dropped
            self.skipped_before += src.skipped

    def summary(self, wall_s: float) -> dict:
        lat = self.latencies_ms
        return {
            "name": self.name,
            "source": self.spec,
            "status": self.status,
            "error": self.error,
            "frames": self.written,
            "people": self.people,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "reconnects": self.reconnects,
            "fps": self.written / wall_s if wall_s > 0 else 0.0,
            "latency_ms": {f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)} if lat else {},
            "outputs": [p for p in self.outputs.values() if p and Path(p).exists()],
        }


@dataclass
class MultiSummary:
    status: str = "ok"  # ok | interrupted
    wall_s: float = 0.0
    frames: int = 0
    fps: float = 0.0  # frames of all streams per second
    ticks: int = 0  # batched model calls (one per tick)
    frames_per_tick: float = 0.0
    stage_ms: dict = field(default_factory=dict)  # per tick
    streams: list = field(default_factory=list)

    def lines(self) -> list[str]:
        stages = "  ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        out = [
            f"{self.status}: {len(self.streams)} streams, {self.frames} frames, {self.fps:.2f} fps in all "
            f"({self.wall_s:.1f} s); {self.ticks} batched MEGA calls, {self.frames_per_tick:.2f} frames each; ms/call: {stages}"
        ]
        out.append(f"{'stream':<24} {'status':<10} {'frames':>6} {'fps':>6} {'dropped':>7} {'reconn':>6} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}")  # fmt: skip
        for s in self.streams:
            lat = s["latency_ms"]
            p = [f"{lat[k]:7.0f}" if k in lat else f"{'-':>7}" for k in ("p50", "p90", "p99")]
            out.append(f"{s['name'][:24]:<24} {s['status']:<10} {s['frames']:>6} {s['fps']:>6.2f} {s['dropped']:>7} {s['reconnects']:>6} {' '.join(p)}")  # fmt: skip
            if s["error"]:
                out.append(f"  {s['name']}: {s['error']}")
        return out

    def to_json(self) -> dict:
        return {"schema": SUMMARY_SCHEMA, "status": self.status, "wall_s": self.wall_s, "frames": self.frames, "fps": self.fps,
                "ticks": self.ticks, "frames_per_tick": self.frames_per_tick, "stage_ms": self.stage_ms, "streams": self.streams}  # fmt: skip


def write_summary(path, summary: MultiSummary) -> None:
    """The JSON summary, written atomically."""
    from train.io import atomic_write

    with atomic_write(Path(path)) as tmp:
        Path(tmp).write_text(json.dumps(summary.to_json(), indent=2) + "\n")


def open_source(spec: str, max_frames: int | None = None):
    """A live VideoSource: a file is played at its fps, a camera or URL as it comes."""
    from realtime.sources import VideoSource

    return VideoSource(spec, live=True, pace=not is_live_spec(spec), max_frames=max_frames)


def infer_tick(frames, detections, cropper, regressor, collector, timer: Timer) -> list:
    """FrameResults of one tick's frames (any sizes) from one MEGA call. Frames of one size go through
    pipeline.submit_batch; mixed sizes are cropped per size and their crops concatenated for MEGA."""
    import torch

    from realtime.pipeline import submit_batch
    from realtime.pose import pose
    from realtime.types import Crops, MeshPred

    groups: dict[tuple, list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(f.image_bgr.shape[:2], []).append(i)
    if len(groups) == 1:
        return submit_batch(frames, detections, cropper, regressor, collector, timer).result()
    device = regressor.device
    parts = []
    with timer.stage("crop", device):
        for rows in groups.values():
            parts.append((rows, cropper.crop([frames[i].image_bgr for i in rows], [detections[i] for i in rows])))
        cat = lambda key: torch.cat([getattr(c, key) for _, c in parts])  # noqa: E731
        crops_all = Crops(
            cat("images"), cat("box_center"), cat("box_size"), cat("frame_slot"), parts[0][1].image_size_wh
        )
    with timer.stage("mega", device):
        pred = regressor(crops_all)
    results: list = [None] * len(frames)
    start = 0
    for rows, crops in parts:
        n = crops.images.shape[0]
        take = lambda t: t[start : start + n] if t is not None else None  # noqa: E731,B023
        pred_g = MeshPred(
            take(pred.tokens), take(pred.rotmat), take(pred.cam_crop), take(pred.verts_canonical), take(pred.vertex_std)
        )
        start += n
        with timer.stage("pose", device):
            meshes = pose(pred_g, crops, regressor.spec.crop_focal)
        with timer.stage("collect", device):
            out = collector.submit([frames[i] for i in rows], [detections[i] for i in rows], pred_g, meshes).result()
        for i, r in zip(rows, out):
            results[i] = r
    return results


def run_streams(
    opts: StreamOptions,
    sources: list,
    detector,
    regressor,
    faces: np.ndarray,
    timer: Timer | None = None,
    report=None,
    progress=None,
) -> MultiSummary:
    """Run every stream to its end (files), or until each live one is gone for good, or an interrupt.

    `sources`: unstarted live VideoSources, one per `opts.sources` entry (see `open_source`); `detector`
    untracked (tracking is per stream here); `report(line)` gets the stream events (default: stderr)."""
    from realtime.collect import Collector
    from realtime.crop import Cropper
    from realtime.detect import keep_largest
    from realtime.sinks import Mp4Sink, ResultsSink, SinkError
    from train.geometry import default_focal

    report = report or (lambda line: print(line, file=sys.stderr, flush=True))
    timer = timer or Timer()
    spec = regressor.spec
    cropper = Cropper(spec.input_hw, spec.mean, spec.std, regressor.device)
    collector = Collector(regressor.device)
    names = stream_names(opts.sources)
    streams = [_Stream(i, s, n, src, opts) for i, (s, n, src) in enumerate(zip(opts.sources, names, sources))]
    summary = MultiSummary()
    try:
        for s in streams:
            if opts.out_dir is None:
                continue
            s.outputs = output_paths(opts.out_dir, s.name, opts.overlay, opts.results)
            w, h = s.size_wh
            meta = dict(fps=np.float32(s.fps), image_size_wh=np.array([w, h], np.int32), source=s.spec, focal=np.float32(default_focal(w, h, spec.crop_focal)),
                        samples=np.int32(regressor.samples), steps=np.int32(regressor.runner.steps if regressor.stochastic else 0), **opts.meta)  # fmt: skip
            if s.outputs["overlay"]:
                s.sinks.append(Mp4Sink(s.outputs["overlay"], s.fps, (w, h)))
            if s.outputs["results"]:
                s.sinks.append(ResultsSink(s.outputs["results"], meta, faces))
    except BaseException:  # a sink failed to open: remove the temporary files of the ones before it
        for s in streams:
            for sink in s.sinks:
                sink.close(False)
        raise
    need_overlay = opts.overlay and opts.out_dir is not None
    errors: list[BaseException] = []
    stop = threading.Event()
    q_render: queue.Queue = queue.Queue(maxsize=opts.queue_size)
    q_sink: queue.Queue = queue.Queue(maxsize=opts.queue_size)

    def put(q, item):
        while True:
            if errors:
                raise errors[0]
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def fail_stream(s: _Stream, message: str):
        with s.lock:
            s.status, s.error = FAILED, message
        report(f"stream {s.name} ({s.spec}): {message}; the other streams go on")

    def render_loop():
        renderer = None
        try:
            if need_overlay:
                from realtime.overlay import OverlayRenderer

                renderer = OverlayRenderer(faces)
            while True:
                item = q_render.get()
                if item is END:
                    break
                s, r = item
                if renderer is not None and not s.sink_failed:
                    with timer.stage("render"):
                        r = replace(r, overlay=renderer(r))
                put(q_sink, (s, r))
        except BaseException as e:
            errors.append(e)
        finally:
            if renderer is not None:
                renderer.close()
            end_queue(q_sink, sink_thread)

    def sink_loop():
        try:
            while True:
                item = q_sink.get()
                if item is END:
                    break
                s, r = item
                if s.sink_failed:
                    continue
                try:
                    with timer.stage("write"):
                        for sink in s.sinks:
                            sink.write(r)
                except SinkError as e:  # this stream's outputs are lost; the others are not
                    s.sink_failed = True  # the main thread closes its source on its next look
                    fail_stream(s, str(e))
                    continue
                s.latencies_ms.append(1000 * (time.perf_counter() - r.frame.captured_s))
                s.written += 1
                s.people += r.boxes_xyxy.shape[0]
                summary.frames += 1
                if progress is not None:
                    progress(summary.frames)
        except BaseException as e:
            errors.append(e)

    def reopen(s: _Stream):
        last = "it ended"
        for attempt in range(1, opts.retries + 1):
            if stop.wait(opts.retry_delay_s * attempt):
                return
            remaining = None if opts.max_frames is None else opts.max_frames - s.taken
            try:
                src = open_source(s.spec, remaining)
            except Exception as e:  # noqa: BLE001 - any failure to open is one more attempt
                last = str(e)
                report(f"stream {s.name} ({s.spec}): re-open {attempt}/{opts.retries} failed: {last}")
                continue
            if (src.width, src.height) != s.size_wh:
                src.stop()
                last = f"came back at {src.width}x{src.height}, not {s.size_wh[0]}x{s.size_wh[1]}"
                break
            with s.lock:
                if stop.is_set():
                    src.stop()
                    return
                s.source, s.index_offset, s.status = src.start(), s.next_index, RUNNING
                s.reconnects += 1
            report(f"stream {s.name} ({s.spec}): re-opened (attempt {attempt}/{opts.retries})")
            return
        fail_stream(s, f"gone: {last}; gave up after {opts.retries} re-opens" if opts.retries else f"gone: {last}")

    def source_ended(s: _Stream, error: BaseException | None):
        s.retire_source()
        if s.live_spec and not stop.is_set() and (opts.max_frames is None or s.taken < opts.max_frames):
            why = f"ended ({error})" if error else "ended"
            if opts.retries == 0:
                fail_stream(s, f"gone: {why}")
                return
            with s.lock:
                s.status = RECONNECTING
            report(f"stream {s.name} ({s.spec}): {why}; re-opening (up to {opts.retries} tries)")
            s.thread = threading.Thread(target=reopen, args=(s,), name=f"reopen-{s.index}", daemon=True)
            s.thread.start()
        elif error is not None:
            fail_stream(s, str(error))
        else:
            with s.lock:
                s.status = ENDED

    def take(s: _Stream):
        """The newest frame of a running stream, re-indexed across re-opens, or None."""
        with s.lock:
            if s.status != RUNNING or s.source is None:
                if s.status == FAILED:
                    s.retire_source()
                return None
            try:
                frame = s.source.poll()
            except StopIteration:
                frame, error = None, None
            except Exception as e:  # noqa: BLE001 - the reader's error ends this stream only
                frame, error = None, e
            else:
                if frame is None:
                    return None
        if frame is None:
            source_ended(s, error)
            return None
        frame = replace(frame, index=s.index_offset + frame.index)
        s.next_index = frame.index + 1
        s.taken += 1
        if opts.max_frames is not None and s.taken >= opts.max_frames:
            s.retire_source()
            with s.lock:
                s.status = ENDED
        return frame

    render_thread = threading.Thread(target=render_loop, name="render", daemon=True)
    sink_thread = threading.Thread(target=sink_loop, name="sinks", daemon=True)
    old_term = None
    if threading.current_thread() is threading.main_thread():

        def on_term(signum, frame):
            raise KeyboardInterrupt

        old_term = signal.signal(signal.SIGTERM, on_term)
    t_start = time.perf_counter()
    render_thread.start()
    sink_thread.start()
    for s in streams:
        s.source.start()
    cap = opts.max_batch or len(streams)
    first = 0  # round-robin: the next tick starts after the last stream served
    tick_frames = 0
    ok = False
    try:
        while True:
            if errors:
                raise errors[0]
            if not any(s.status in (RUNNING, RECONNECTING) for s in streams):
                break
            picked = []
            for k in range(len(streams)):
                if len(picked) >= cap:
                    break
                s = streams[(first + k) % len(streams)]
                frame = take(s)
                if frame is not None:
                    picked.append((s, frame))
            if not picked:
                time.sleep(0.002)
                continue
            first = (picked[-1][0].index + 1) % len(streams)
            frames = [f for _, f in picked]
            with timer.stage("detect"):
                dets = [keep_largest(s.tracker(d), opts.max_people) for (s, _), d in zip(picked, detector(frames))]
            results = infer_tick(frames, dets, cropper, regressor, collector, timer)
            summary.ticks += 1
            tick_frames += len(frames)
            for (s, _), r in zip(picked, results):
                if s.smoother is not None:
                    with timer.stage("smooth"):
                        verts, cam_t = s.smoother(r.frame.index, r.track_ids, r.verts_cam, r.cam_t_full, r.vertex_std)
                    r = replace(r, verts_cam=verts, cam_t_full=cam_t)
                put(q_render, (s, r))
        ok = True
    except KeyboardInterrupt:
        summary.status = "interrupted"
        ok = True  # finalise what was written so far
    finally:
        stop.set()
        for s in streams:
            with s.lock:
                s.retire_source()
            if s.thread is not None:
                s.thread.join(timeout=30)
        end_queue(q_render, render_thread)
        render_thread.join(timeout=120)
        sink_thread.join(timeout=120)
        if errors:
            ok = False
        summary.wall_s = time.perf_counter() - t_start
        for s in streams:
            if s.status in (RUNNING, RECONNECTING):
                s.status = "interrupted" if summary.status == "interrupted" else ENDED
            final = dict(num_frames=np.int32(s.written), frames_skipped=np.int32(s.skipped), frames_dropped=np.int32(s.dropped),
                         status={ENDED: "ok"}.get(s.status, s.status))  # fmt: skip
            for sink in s.sinks:
                try:
                    sink.close(ok and not s.sink_failed, final) if isinstance(sink, ResultsSink) else sink.close(
                        ok and not s.sink_failed
                    )
                except Exception as e:  # one sink failing to close loses only its own stream's file
                    if not s.sink_failed:
                        s.sink_failed = True
                        s.status, s.error = FAILED, str(e)
                        report(f"stream {s.name} ({s.spec}): {e}")
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    if errors:
        raise errors[0]
    summary.fps = summary.frames / summary.wall_s if summary.wall_s > 0 else 0.0
    summary.frames_per_tick = tick_frames / summary.ticks if summary.ticks else 0.0
    if summary.ticks:
        summary.stage_ms = {k: v / summary.ticks for k, v in timer.total_ms().items()}
    summary.streams = [s.summary(summary.wall_s) for s in streams]
    return summary
