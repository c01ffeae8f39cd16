"""Shared test fixtures: where ../shared lives, and skips that say why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import ASSETS, REFERENCE, ROOT

# Tests read the shared assets in place (never copied into the repo).
os.environ.setdefault("MEGA_RT_ASSETS", str(ASSETS))
# Tests never write into the user's real cache.
os.environ.setdefault("MEGA_RT_CACHE", str(ROOT / ".pytest_cache" / "mega-rt-cache"))
# Tests never download weights (a run without --weights would fetch the official ones on first use).
os.environ.setdefault("MEGA_RT_OFFLINE", "1")


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    if not (ASSETS / "meshconv" / "_pool0.npy").is_file():
        pytest.skip(f"shared assets not found at {ASSETS} (set MEGA_RT_ASSETS)")
    return ASSETS


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "fixtures" / "manifest.json").is_file():
        pytest.skip(f"reference fixtures not found at {REFERENCE} (set MEGA_RT_REFERENCE)")
    return REFERENCE


def pytest_configure(config):
    # Mesa's llvmpipe (the EGL rendering tests) and triton each bring their own LLVM. Importing triton
    # after an EGL context exists segfaults, and torch imports it lazily (torch._dynamo, on the first
    # optimizer or compile), so a training test after a rendering test would crash. Load it first.
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # torch without dynamo/triton: nothing to order
        pass


def pytest_collection_modifyitems(config, items):
    import importlib.util

    have_cuda = False
    try:
        import torch

        have_cuda = torch.cuda.is_available()
    except ImportError:
        pass
    have_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not have_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch"))
        if "tensorrt" in item.keywords and not have_trt:
            item.add_marker(
                pytest.mark.skip(reason="needs TensorRT (pip install 'mega-rt[tensorrt]' on a GPU machine)")
            )


@pytest.fixture(scope="module")
def model(assets_dir):
    """The synthetic body (train.synthetic.body) of the rendering tests; modules meaning another model define their own."""
    from train.synthetic import body as B

    return B.SyntheticBody(B.load_rig(assets_dir))


@pytest.fixture(scope="module")
def renderer(model):
    """An EGL renderer of the body's faces; skips (saying why) where no EGL context can be made."""
    from train.render import MeshRenderer, RendererUnavailable

    try:
        r = MeshRenderer(model.faces)
    except RendererUnavailable as e:
        pytest.skip(str(e))
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """CLI commands run in-process set torch's thread count; keep that from leaking into later tests."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
