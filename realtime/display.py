"""Whether a live window can open, asked before one is opened.

OpenCV's Qt build (opencv-python, which ultralytics depends on) aborts the whole process (SIGABRT)
when its first window finds no X server, so the question has to be settled before `cv2.imshow`:

    problem = display_problem()      # None: a window can open; else why not, in a few words

The checks, cheapest first: OpenCV has a GUI at all; DISPLAY or WAYLAND_DISPLAY is set; an X client
connection to DISPLAY succeeds (libX11's XOpenDisplay through ctypes, where libX11 loads). Then a child
process opens and closes an OpenCV window itself (the toolkit may still fail where libX11 did not,
e.g. a missing xcb plugin library), so that an abort there costs nothing here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys

PROBE_TIMEOUT_S = 15.0
_PROBE = "import cv2; cv2.namedWindow('mega-rt probe'); cv2.waitKey(1); cv2.destroyAllWindows()"


def display_problem(env: dict | None = None) -> str | None:
    """None when an OpenCV window can open in `env` (default: this process's environment)."""
    env = dict(os.environ if env is None else env)
    if not gui_framework():
        return "this OpenCV has no GUI (a headless build)"
    x_display, wayland = env.get("DISPLAY", ""), env.get("WAYLAND_DISPLAY", "")
    if not x_display and not wayland:
        return "neither DISPLAY nor WAYLAND_DISPLAY is set"
    if x_display and x_connects(x_display) is False:
        return f"cannot connect to the X display {x_display}"
    # the X server answers (or cannot be asked): whether OpenCV's toolkit opens a window on it is only
    # known by trying, where an abort costs nothing
    return _probe_in_child(env)


def gui_framework() -> str:
    """OpenCV's window toolkit ("QT", "GTK3", ...), or "" for a build without one."""
    import cv2

    current = getattr(cv2, "currentUIFramework", None)
    if current is not None:
        name = str(current() or "").upper()
        return "" if name in ("", "NONE") else name
    for line in cv2.getBuildInformation().splitlines():  # builds before currentUIFramework
        if line.strip().startswith("GUI:"):
            name = line.split(":", 1)[1].strip().upper()
            return "" if name in ("", "NONE") else name
    return ""


def x_connects(display: str) -> bool | None:
    """True / False: whether an X client connection to `display` opens; None: libX11 is not loadable."""
    name = ctypes.util.find_library("X11")
    if name is None:
        return None
    try:
        x11 = ctypes.CDLL(name)
    except OSError:
        return None
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    handle = x11.XOpenDisplay(display.encode())
    if not handle:
        return False
    x11.XCloseDisplay(handle)
    return True


def _probe_in_child(env: dict) -> str | None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return f"opening a test window took over {PROBE_TIMEOUT_S:.0f} s"
    if done.returncode == 0:
        return None
    where = env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")
    return f"OpenCV cannot open a window on {where} (exit {done.returncode})"
