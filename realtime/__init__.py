"""mega-rt's video pipeline and CLI; `from realtime import MeshRecovery` is the Python API (realtime/api.py)."""


def __getattr__(name):
    # imported on first use, so that `import realtime` (and `mega-rt --help`) stays free of torch
    if name in ("MeshRecovery", "Person", "FramePeople"):
        from realtime import api

        return getattr(api, name)
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")


__all__ = ["MeshRecovery", "Person", "FramePeople"]
