"""The Gradio page: a video tab (upload -> progress -> overlay, per-track table, 3D view and overlay
still of any frame, downloads) and a webcam tab (live overlay and frame rate), sharing one settings row.
Every event that runs the model is in one Gradio concurrency group of size 1: one job at a time."""

from __future__ import annotations

import os
from pathlib import Path

from realtime.app.config import VIDEO_SUFFIXES, AppConfig, AppInputError, RunSettings
from realtime.app.workspace import Workspace

MODEL_GROUP = "model"  # the concurrency group of every event that runs the model
ALL_INTERFACES = ("0.0.0.0", "::", "")


def _errors():
    """The failures of a run that are one line for the page (the rest are the app's bugs)."""
    from realtime.errors import DetectorError
    from realtime.infer import WeightsMissing
    from realtime.sinks import SinkError
    from realtime.sources import SourceError
    from train.assets import AssetError
    from train.checkpoint import CheckpointError
    from train.render import RendererUnavailable

    return (AppInputError, DetectorError, WeightsMissing, SinkError, SourceError, AssetError, CheckpointError,
            RendererUnavailable)  # fmt: skip


def build_app(config: AppConfig, workspace: Workspace, models=None, live=None):
    import gradio as gr

    from realtime.app.jobs import run_video
    from realtime.app.live import LiveProcessor
    from realtime.app.meshes import TRACK_COLUMNS, frame_count, frame_glb, overlay_frame, track_table
    from realtime.app.models import ModelCache
    from realtime.app.uploads import check_upload

    limits = config.limits
    models = models or ModelCache(config)
    live = live or LiveProcessor(models)
    errors = _errors()
    PROGRESS = gr.Progress()  # Gradio finds the progress bar by this default value

    def settings_of(det_conf, samples, steps, smooth, max_people) -> RunSettings:
        return RunSettings.from_page(det_conf, samples, steps, smooth, max_people, limits)

    def show_frame(frame, job):
        if not job:
            return None, None
        frame = int(frame)
        glb = Path(job["folder"]) / "frames" / f"frame_{frame:06d}.glb"
        glb.parent.mkdir(exist_ok=True)
        people = glb.is_file() or frame_glb(job["results"], frame, glb)
        return overlay_frame(job["overlay"], frame), (str(glb) if people else None)

    def process(path, det_conf, samples, steps, smooth, max_people, progress=PROGRESS):
        try:
            settings = settings_of(det_conf, samples, steps, smooth, max_people)
            source = check_upload(path, workspace, limits)
            total = min(source.frame_count or limits.max_frames, limits.max_frames)
            progress((0, total), desc="loading the model", unit="frames")
            model = models.get(settings.samples, settings.steps)

            def advance(done, timer):
                progress((done, total), desc="frames", unit="frames")

            job = run_video(model, source, settings, workspace.new_job(), progress=advance)
        except errors as e:
            raise gr.Error(str(e), print_exception=False) from None
        state = {"folder": str(job.folder), "results": str(job.results_npz), "overlay": str(job.overlay_mp4)}
        frames = frame_count(job.results_npz)
        cut = source.frame_count and source.frame_count > limits.max_frames
        note = f" (the first {limits.max_frames} frames of {source.frame_count}: the app's limit)" if cut else ""
        mode = f"stochastic, {settings.samples} samples: colours show the spread" if job.stochastic else "deterministic"
        status = f"{job.frames} frames, {job.people} people-frames, {mode}{note}. {job.line}"
        still, glb = show_frame(0, state)
        slider = gr.Slider(minimum=0, maximum=max(frames - 1, 1), value=0, step=1, interactive=frames > 1)
        return (status, str(job.overlay_mp4), track_table(job.results_npz), slider, job.downloads(), state, still, glb)

    def live_frame(image, det_conf, samples, steps, smooth, max_people):
        if image is None:
            return None, "waiting for the camera"
        try:
            return live(image, settings_of(det_conf, samples, steps, smooth, max_people))
        except errors as e:
            raise gr.Error(str(e), print_exception=False) from None

    with gr.Blocks(title="mega-rt") as demo:
        gr.Markdown(
            "## mega-rt: human meshes from video (MEGA)\n"
            f"Weights: `{config.weights}`, detector: `{config.detector}`. One job at a time; uploads up to "
            f"{limits.max_upload_mb} MB, the first {limits.max_frames} frames run."
        )
        with gr.Row():
            det_conf = gr.Slider(0.05, 0.95, value=0.3, step=0.05, label="detector confidence")
            samples = gr.Slider(1, limits.max_samples, value=1, step=1, label="samples (> 1: uncertainty)")
            steps = gr.Slider(0, limits.max_steps, value=0, step=1, label="steps (0: the model's)")
            max_people = gr.Slider(0, limits.max_people, value=0, step=1, label="max people (0: all)")
            smooth = gr.Checkbox(False, label="smoothing")
        settings = [det_conf, samples, steps, smooth, max_people]
        job = gr.State(None)
        with gr.Tab("Video"):
            with gr.Row():
                upload = gr.File(label="video", file_types=list(VIDEO_SUFFIXES), type="filepath", elem_id="upload")
                run = gr.Button("Run", variant="primary", elem_id="run")
            status = gr.Markdown(elem_id="status")
            overlay = gr.Video(label="overlay", interactive=False, height=360, elem_id="overlay")
            tracks = gr.Dataframe(headers=TRACK_COLUMNS, label="tracks", interactive=False, elem_id="tracks")
            frame = gr.Slider(0, 1, value=0, step=1, label="frame", interactive=False, elem_id="frame")
            with gr.Row():
                still = gr.Image(label="overlay of the frame", interactive=False, elem_id="still")
                view3d = gr.Model3D(label="meshes of the frame (3D)", elem_id="view3d")
            downloads = gr.File(label="results", file_count="multiple", interactive=False, elem_id="downloads")
        with gr.Tab("Webcam"):
            with gr.Row():
                camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="camera", elem_id="camera")
                live_view = gr.Image(label="live overlay", interactive=False, elem_id="live")
            live_status = gr.Markdown(elem_id="live-status")

        run.click(process, [upload, *settings], [status, overlay, tracks, frame, downloads, job, still, view3d],
                  concurrency_limit=1, concurrency_id=MODEL_GROUP)  # fmt: skip
        frame.release(show_frame, [frame, job], [still, view3d], concurrency_limit=2)
        camera.stream(live_frame, [camera, *settings], [live_view, live_status], stream_every=0.1,
                      concurrency_limit=1, concurrency_id=MODEL_GROUP)  # fmt: skip
    return demo, live


def bind_note(host: str, port: int) -> str | None:
    """The one line said when the app listens beyond this machine."""
    if host in ALL_INTERFACES:
        return f"listening on all interfaces ({host or '0.0.0.0'}): anyone who reaches port {port} can run jobs"
    return None


def launch(config: AppConfig) -> None:
    """Serve the app until Ctrl-C; its temporary folder is removed at the end."""
    import signal

    def on_term(signum, frame):  # Gradio stops its server on KeyboardInterrupt; the folder goes after it
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with Workspace(config.workdir) as workspace:
        workspace.use_for_gradio()
        demo, live = build_app(config, workspace)
        note = bind_note(config.host, config.port)
        if note:
            print(note)
        demo.queue(default_concurrency_limit=1, max_size=16)
        try:
            demo.launch(server_name=config.host, server_port=config.port, max_file_size=f"{config.limits.max_upload_mb}mb",
                        allowed_paths=[str(workspace.jobs)], share=False, inbrowser=False, show_error=True)  # fmt: skip
        finally:
            live.close()
