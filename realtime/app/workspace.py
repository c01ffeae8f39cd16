"""The app's one temporary folder: Gradio's uploads and cache, and one sub-folder per job. The app
writes nowhere else, and removes it at exit."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class Workspace:
    def __init__(self, parent: str | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="mega-rt-app-", dir=parent)).resolve()
        self.gradio = self.root / "gradio"  # GRADIO_TEMP_DIR: uploads and the files served to the page
        self.jobs = self.root / "jobs"
        for folder in (self.gradio, self.jobs):
            folder.mkdir()

    def new_job(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="job-", dir=self.jobs))

    def contains(self, path) -> bool:
        """Whether `path`, after links, lies inside this folder."""
        real = Path(os.path.realpath(path))
        return real == self.root or self.root in real.parents

    def use_for_gradio(self) -> None:
        """Point Gradio's upload folder and cache here (read when the page is built)."""
        os.environ["GRADIO_TEMP_DIR"] = str(self.gradio)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
