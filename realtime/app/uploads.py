"""What an upload must be before anything runs on it: a file the app received, under the size limit,
named as a video and decodable as one. Each refusal is one line naming the file and what to do."""

from __future__ import annotations

from pathlib import Path

from realtime.app.config import VIDEO_SUFFIXES, AppInputError, AppLimits
from realtime.app.workspace import Workspace


def check_upload(path, workspace: Workspace, limits: AppLimits):
    """An unstarted realtime.sources.VideoSource of the upload (at most `limits.max_frames` frames)."""
    from realtime.sources import SourceError, VideoSource

    if not path:
        raise AppInputError("no video: drop a video file (.mp4, .mov, .mkv, .avi, .webm) first")
    path = Path(path)
    name = path.name
    if not workspace.contains(path) or not path.is_file():
        raise AppInputError(f"{name}: not a file uploaded to this app; upload it through the page")
    size_mb = path.stat().st_size / 2**20
    if size_mb > limits.max_upload_mb:
        raise AppInputError(
            f"{name}: {size_mb:.0f} MB is over the upload limit of {limits.max_upload_mb} MB; "
            "upload a shorter clip or start the app with a larger --max-upload-mb"
        )
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise AppInputError(f"{name}: not a video file; upload one of {', '.join(VIDEO_SUFFIXES)}")
    try:
        return VideoSource(str(path), max_frames=limits.max_frames)
    except SourceError:
        raise AppInputError(
            f"{name}: not a video that can be decoded; upload an .mp4 (H.264) or another common video"
        ) from None
