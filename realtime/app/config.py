"""The app's settings (fixed at start) and one run's settings (chosen on the page), with their bounds."""

from __future__ import annotations

from dataclasses import dataclass, field

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm")


class AppInputError(ValueError):
    """An upload or a setting the app refuses; the message is one line for the page."""


@dataclass(frozen=True)
class AppLimits:
    max_upload_mb: int = 200
    max_frames: int = 900  # frames of one upload that run (30 s at 30 fps); the rest is left out, and said so
    max_samples: int = 16
    max_steps: int = 16
    max_people: int = 40


@dataclass(frozen=True)
class AppConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    weights: str = "demo"  # what MeshRecovery.from_pretrained takes: hrnet | resnet | vit | demo | a checkpoint
    detector: str = "yolo11n.pt"
    device: str | None = None  # None: cuda when visible
    workdir: str | None = None  # where the app's temporary folder is made (None: the system's temp folder)
    limits: AppLimits = field(default_factory=AppLimits)


@dataclass(frozen=True)
class RunSettings:
    det_conf: float = 0.3
    samples: int = 1  # > 1: stochastic, the overlay and the 3D view coloured by per-vertex spread
    steps: int | None = None  # None: the config's
    smooth: bool = False
    max_people: int | None = None

    @classmethod
    def from_page(cls, det_conf, samples, steps, smooth, max_people, limits: AppLimits) -> RunSettings:
        """The page's values (numbers arrive as floats, 0 meaning 'default' / 'no limit'), checked."""
        try:
            det_conf, samples, steps, max_people = float(det_conf), int(samples), int(steps or 0), int(max_people or 0)
        except (TypeError, ValueError):
            raise AppInputError("settings: expected numbers for confidence, samples, steps and max people") from None
        if not 0.0 <= det_conf <= 1.0:
            raise AppInputError(f"detector confidence {det_conf}: a threshold between 0 and 1")
        if not 1 <= samples <= limits.max_samples:
            raise AppInputError(f"samples {samples}: 1 (deterministic) to {limits.max_samples}")
        if not 0 <= steps <= limits.max_steps:
            raise AppInputError(f"steps {steps}: 1 to {limits.max_steps}, or 0 for the model's default")
        if not 0 <= max_people <= limits.max_people:
            raise AppInputError(f"max people {max_people}: 1 to {limits.max_people}, or 0 for everyone")
        return cls(det_conf, samples, steps or None, bool(smooth), max_people or None)
