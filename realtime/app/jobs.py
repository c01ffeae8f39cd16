"""One uploaded video through the pipeline (realtime/pipeline.py) into the job's folder: the overlay mp4
(realtime/sinks.py, H.264 fragmented mp4, which browsers play as it is), the results npz and jsonl,
and the animation files (realtime.anim)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from realtime.app.config import RunSettings


@dataclass(frozen=True)
class VideoJob:
    folder: Path
    overlay_mp4: Path
    results_npz: Path
    results_jsonl: Path
    animations: tuple  # files of realtime.anim: PC2 + OBJ per track, a morph glTF when small
    frames: int
    people: int
    stochastic: bool
    line: str  # the pipeline's summary line

    def downloads(self) -> list[str]:
        return [str(p) for p in (self.results_npz, self.results_jsonl, *self.animations)]


def run_video(model, source, settings: RunSettings, folder: Path, progress=None) -> VideoJob:
    """`source`: an unstarted VideoSource (realtime/app/uploads.py); `progress(done, timer)` per frame."""
    from realtime.app.models import build_detector_for
    from realtime.pipeline import PipelineOptions, run_pipeline

    stem = Path(source.spec).stem
    out, results = folder / f"{stem}_mega.mp4", folder / f"{stem}_mega.npz"
    detector, chosen = build_detector_for(model, settings.det_conf, source.fps)
    options = PipelineOptions(
        source=source.spec, out=str(out), results=str(results), max_people=settings.max_people,
        max_frames=source.max_frames, smooth=settings.smooth,
        meta={"weights": model.weights.description, **model.weights.meta(), **chosen.meta()},
    )  # fmt: skip
    summary = run_pipeline(options, source, detector, model.regressor, model.faces, progress=progress)
    return VideoJob(
        folder, out, results, results.with_suffix(".jsonl"), tuple(animation_files(results, folder)),
        summary.frames, summary.people, settings.samples > 1, summary.line(),
    )  # fmt: skip


MORPH_GLB_MAX_MESHES = 600  # a morph-target glTF holds every mesh (~80 kB each): past this, PC2 only


def animation_files(results_npz: Path, folder: Path) -> list[Path]:
    """The animation files of `mega-rt export-anim` for every track, without an SMPL fit (the app has no
    SMPL model): a PC2 point cache + base OBJ per track, and one glTF of morph targets when it stays small."""
    from realtime.anim.export import export_anim
    from realtime.anim.results import Results

    results = Results(results_npz)
    tracks = results.track_ids()
    if not tracks:
        return []
    paths = export_anim(results, "pc2", tracks, folder, None)
    if len(results.frame) <= MORPH_GLB_MAX_MESHES:
        paths += export_anim(results, "glb", tracks, folder, None, warn=lambda line: None)
    return paths
