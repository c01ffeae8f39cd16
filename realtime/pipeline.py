"""The only module that knows the order of the stages, the threads and the bounded queues between them.

    source thread --frames--> [main: detect -> crop -> MEGA -> pose -> collect -> smooth] --results-->
        render thread --overlays--> sink thread (mp4, window, results, meshes)

Per batch of frames the main thread calls the detector once, and reads the device back once (collect:
one copy of all outputs). On CUDA nothing else waits for the device: the copy of batch i is resolved
after batch i+1 is queued (file mode), so the host prepares the next batch while the device works.

File mode batches the people of several frames into one MEGA call and never drops a frame (the
reader blocks when the queues are full). Live mode takes one frame at a time and the source drops the
oldest frame when the pipeline is behind. Every queue is bounded, so memory and latency stay flat.
Ctrl-C / SIGTERM stop the reader; what is already in flight is rendered and written, and the outputs
are finalised (status "interrupted").
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realtime.timing import Timer
from realtime.types import FrameResult, HudStats

END = object()  # the last item a stage thread takes from its queue


def end_queue(q: queue.Queue, consumer: threading.Thread) -> None:
    """Put END on `q` for the `consumer` thread, unless it has stopped (a dead consumer frees no slot)."""
    while consumer.is_alive():
        try:
            q.put(END, timeout=0.1)
            return
        except queue.Full:
            continue


@dataclass
class PipelineOptions:
    source: str
    live: bool = False  # camera/URL or a file played at its own rate: drop frames when behind
    pace: bool = False  # play a file at its fps (stream mode on a file)
    out: str | None = None  # overlay mp4
    results: str | None = None  # results npz (+ .jsonl)
    export_dir: str | None = None
    export_format: str = "obj"
    show: bool = False
    max_people: int | None = None
    max_frames: int | None = None
    frame_batch: int = 4  # file mode: frames whose people share one MEGA call
    smooth: bool = False
    smooth_min_cutoff: float = 1.0
    smooth_beta: float = 0.5
    queue_size: int = 8
    hud: bool = False  # draw the end-to-end fps and latency on the overlay
    meta: dict = field(default_factory=dict)  # extra fields for the results file
    joint_regressor: object = None  # (J, 6890) float32 tensor: joints_cam in the results file


@dataclass
class Summary:
    status: str = "ok"  # ok | interrupted | stopped (window closed)
    frames: int = 0  # frames written / shown
    people: int = 0  # person rows
    frames_with_people: int = 0
    skipped: int = 0  # undecodable input frames
    dropped: int = 0  # live mode: frames dropped to stay real time
    wall_s: float = 0.0
    fps: float = 0.0
    stage_ms: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)

    def line(self) -> str:
        stages = "  ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        s = f"{self.status}: {self.frames} frames, {self.people} people-frames, {self.fps:.2f} fps end to end ({self.wall_s:.1f} s); ms/frame: {stages}"
        if self.skipped:
            s += f"; {self.skipped} undecodable frames skipped"
        if self.dropped:
            s += f"; {self.dropped} frames dropped to stay real time"
        if self.latency_ms:
            s += "; latency ms " + " ".join(f"{k} {v:.0f}" for k, v in self.latency_ms.items())
        return s


def _put(q: queue.Queue, item, errors: list):
    """Blocking put that gives up when another thread failed (no deadlock on a dead consumer)."""
    while True:
        if errors:
            raise errors[0]
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def run_pipeline(
    opts: PipelineOptions, source, detector, regressor, faces: np.ndarray, timer: Timer | None = None, progress=None
) -> Summary:
    """Run to the end of the source (or an interrupt). `source` is an unstarted realtime.sources.VideoSource.

    Outputs are created (and their folders checked) before the first frame is read."""
    from realtime.collect import Collector
    from realtime.crop import Cropper
    from realtime.detect import keep_largest
    from realtime.sinks import MeshExportSink, Mp4Sink, ResultsSink, WindowSink
    from realtime.smooth import OneEuroSmoother
    from train.geometry import default_focal

    timer = timer or Timer()
    spec = regressor.spec
    cropper = Cropper(spec.input_hw, spec.mean, spec.std, regressor.device)
    collector = Collector(regressor.device)
    smoother = OneEuroSmoother(source.fps, opts.smooth_min_cutoff, opts.smooth_beta) if opts.smooth else None
    sinks = []
    summary = Summary()
    meta = dict(fps=np.float32(source.fps), image_size_wh=np.array([source.width, source.height], np.int32), source=str(opts.source),
                focal=np.float32(default_focal(source.width, source.height, spec.crop_focal)), samples=np.int32(regressor.samples), steps=np.int32(regressor.runner.steps if regressor.stochastic else 0), **opts.meta)  # fmt: skip
    try:
        if opts.out:
            sinks.append(Mp4Sink(opts.out, source.fps, (source.width, source.height)))
        if opts.results:
            sinks.append(ResultsSink(opts.results, meta, faces, joint_regressor=opts.joint_regressor))
        if opts.export_dir:
            sinks.append(MeshExportSink(opts.export_dir, faces, opts.export_format))
        if opts.show:
            sinks.append(WindowSink())
    except BaseException:  # a later sink failed to open: remove the temporary files of the earlier ones
        for s in sinks:
            s.close(False)
        raise
    need_overlay = bool(opts.out or opts.show)
    errors: list[BaseException] = []
    q_render: queue.Queue = queue.Queue(maxsize=opts.queue_size)
    q_sink: queue.Queue = queue.Queue(maxsize=opts.queue_size)
    latencies: list[float] = []
    stop_requested = threading.Event()

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
                if renderer is not None:
                    if opts.hud:
                        item = _with_hud(item, timer)
                    with timer.stage("render"):
                        item = _with_overlay(item, renderer(item))
                _put(q_sink, item, errors)
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
                with timer.stage("write"):
                    for s in sinks:
                        s.write(item)
                latencies.append(1000 * (time.perf_counter() - item.frame.captured_s))
                timer.mark("frame", latencies[-1])
                summary.frames += 1
                summary.people += item.boxes_xyxy.shape[0]
                summary.frames_with_people += item.boxes_xyxy.shape[0] > 0
                if any(getattr(s, "closed_by_user", False) for s in sinks):
                    stop_requested.set()
                if progress is not None:
                    progress(summary.frames, timer)
        except BaseException as e:
            errors.append(e)

    render_thread = threading.Thread(target=render_loop, name="render", daemon=True)
    sink_thread = threading.Thread(target=sink_loop, name="sinks", daemon=True)
    old_term = None
    if threading.current_thread() is threading.main_thread():

        def on_term(signum, frame):
            raise KeyboardInterrupt

        old_term = signal.signal(signal.SIGTERM, on_term)
    t_start = time.perf_counter()
    sink_thread.start()  # first: a renderer that fails at once hands its end marker to a live sink thread
    render_thread.start()
    source.start()
    frame_batch = 1 if source.live else max(1, opts.frame_batch)
    device = regressor.device
    # batches whose read-back is still in flight: one on CUDA in file mode (overlap), none live (latency)
    lag = 1 if device.type == "cuda" and not source.live else 0
    pending: deque = deque()

    def deliver(batch_pending):
        with timer.stage("collect"):
            results = batch_pending.result()
        if smoother is not None:
            with timer.stage("smooth"):
                results = [_smoothed(r, smoother) for r in results]
        for r in results:
            _put(q_render, r, errors)

    ok = False
    try:
        frames_iter = iter(source)
        finished = False
        while not finished and not stop_requested.is_set():
            if errors:
                raise errors[0]
            batch = []
            for frame in frames_iter:
                batch.append(frame)
                if len(batch) >= frame_batch or (batch and source.queue.empty() and source.live):
                    break
            else:
                finished = True
            if not batch:
                break
            with timer.stage("detect"):
                dets = [keep_largest(d, opts.max_people) for d in detector(batch)]
            pending.append(submit_batch(batch, dets, cropper, regressor, collector, timer))
            while len(pending) > lag:
                deliver(pending.popleft())
        while pending:
            deliver(pending.popleft())
        ok = True
        summary.status = "stopped" if stop_requested.is_set() else "ok"
    except KeyboardInterrupt:
        summary.status = "interrupted"
        ok = True  # finalise what was written so far, with the batches already computed
        while pending and not errors:
            deliver(pending.popleft())
    finally:
        source.stop()
        end_queue(q_render, render_thread)  # the renderer drains what is in flight, then stops
        render_thread.join(timeout=120)
        sink_thread.join(timeout=120)
        if errors:
            ok = False
        summary.wall_s = time.perf_counter() - t_start
        summary.skipped, summary.dropped = source.skipped, source.dropped
        final = dict(
            num_frames=np.int32(summary.frames),
            frames_skipped=np.int32(source.skipped),
            frames_dropped=np.int32(source.dropped),
            status=summary.status,
        )
        for s in sinks:
            try:
                s.close(ok, final) if isinstance(s, ResultsSink) else s.close(ok)
            except Exception as e:  # one sink failing to close must not lose the others
                errors.append(e)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    if errors:
        raise errors[0]
    summary.fps = summary.frames / summary.wall_s if summary.wall_s > 0 else 0.0
    summary.stage_ms = _per_frame_ms(timer, summary.frames, frame_batch)
    if latencies:
        summary.latency_ms = {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 90, 99)}
    summary.outputs = [str(p) for p in (opts.out, opts.results, opts.export_dir) if p and Path(p).exists()]
    return summary


def submit_batch(frames, detections, cropper, regressor, collector, timer: Timer):
    """Crop, MEGA, pose and the one read-back of a batch of frames with their detections: the work of
    the pipeline's main thread (and of the Python API) per batch. Returns the collector's Pending."""
    from realtime.pose import pose

    device = regressor.device
    with timer.stage("crop", device):
        crops = cropper.crop([f.image_bgr for f in frames], detections)
    with timer.stage("mega", device):
        pred = regressor(crops)
    with timer.stage("pose", device):
        meshes = pose(pred, crops, regressor.spec.crop_focal)
    with timer.stage("collect", device):
        return collector.submit(frames, detections, pred, meshes)


def _smoothed(r: FrameResult, smoother) -> FrameResult:
    from dataclasses import replace

    verts, cam_t = smoother(r.frame.index, r.track_ids, r.verts_cam, r.cam_t_full, r.vertex_std)
    return replace(r, verts_cam=verts, cam_t_full=cam_t)


def _with_overlay(r: FrameResult, overlay: np.ndarray) -> FrameResult:
    from dataclasses import replace

    return replace(r, overlay=overlay)


def _with_hud(r: FrameResult, timer: Timer) -> FrameResult:
    from dataclasses import replace

    fps, latency_ms = timer.recent("frame")
    return replace(r, hud=HudStats(fps, latency_ms))


def _per_frame_ms(timer: Timer, frames: int, frame_batch: int) -> dict:
    """Total ms per stage divided by frames: batched stages are shared by the frames of a batch."""
    if frames == 0:
        return {}
    return {k: v / frames for k, v in timer.total_ms().items()}
