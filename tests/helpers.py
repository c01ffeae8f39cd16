"""Paths every test module may need: the repository root and the shared test data beside it."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MEGA_RT_SHARED", ROOT.parent / "shared"))
ASSETS = Path(os.environ.get("MEGA_RT_ASSETS", SHARED / "assets"))
REFERENCE = Path(os.environ.get("MEGA_RT_REFERENCE", SHARED / "reference"))
