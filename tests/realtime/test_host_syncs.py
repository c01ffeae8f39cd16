"""Host synchronisations on the hot path (DESIGN.md, "The hot path on a GPU").

The real pipeline (tiny random-weight MEGA on the torch backend, the shared street video, a boxes file)
runs under a counter of device -> host transfers: `.cpu()`, `.item()`, `.tolist()`, `.numpy()`, scalar
reads (`float(t)`, `bool(t)`), device -> host copies, ops whose output size depends on the data
(`nonzero`, boolean indexing, ...) and `torch.cuda.synchronize`. Only calls on tensors of the compute
device count, so on a CPU every such call on a tensor counts (the hot path's tensors are all CPU ones,
and each call would be a transfer on a GPU), while the host-side bookkeeping (numpy detections) is free.
One frame batch (detect -> crop -> MEGA -> pose -> collect) may read the device back at most twice.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.helpers import ASSETS

STREET = ASSETS / "video" / "street_720p.avi"
# the budget of one frame batch: the detector's boxes (YOLO reads all frames' boxes back in one copy)
# and the collect step's one copy of every output; a boxes file or the full frame is on the host already
DETECTOR_READBACKS = 1
COLLECT_READBACKS = 1
MAX_SYNCS_PER_BATCH = DETECTOR_READBACKS + COLLECT_READBACKS

_aten = torch.ops.aten
# output size known only after reading the data: the host waits for the device
_DATA_DEPENDENT = {_aten.nonzero.default, _aten.masked_select.default, _aten._unique2.default, _aten.unique_dim.default,
                   _aten.unique_consecutive.default, _aten.repeat_interleave.Tensor}  # fmt: skip
_TENSOR_METHODS = ("cpu", "item", "tolist", "numpy")


class HostSyncCounter(TorchDispatchMode):
    """Counts device -> host transfers made by the thread that enters it (see the module docstring).

    `events` lists what was counted, e.g. "Tensor.cpu" or "aten.nonzero.default". A counted method's
    own ops (the copy inside `.cpu()`) are not counted again."""

    def __init__(self, device):
        super().__init__()
        self.device_type = torch.device(device).type
        self.events: list[str] = []
        self._thread = None
        self._inside = threading.local()
        self._saved = {}

    @property
    def count(self) -> int:
        return len(self.events)

    def _counts(self, t) -> bool:
        return (
            isinstance(t, torch.Tensor)
            and t.device.type == self.device_type
            and threading.get_ident() == self._thread
            and not getattr(self._inside, "on", False)
        )

    def __enter__(self):
        self._thread = threading.get_ident()
        for name in _TENSOR_METHODS:
            self._saved[name] = original = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap(name, original))
        self._saved["synchronize"] = sync = torch.cuda.synchronize

        def synchronize(*args, **kwargs):
            if threading.get_ident() == self._thread:
                self.events.append("torch.cuda.synchronize")
            return sync(*args, **kwargs)

        torch.cuda.synchronize = synchronize
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            for name in _TENSOR_METHODS:
                setattr(torch.Tensor, name, self._saved[name])
            torch.cuda.synchronize = self._saved["synchronize"]

    def _wrap(self, name, original):
        counter = self

        def method(t, *args, **kwargs):
            if not counter._counts(t):
                return original(t, *args, **kwargs)
            counter.events.append(f"Tensor.{name}")
            counter._inside.on = True
            try:
                return original(t, *args, **kwargs)
            finally:
                counter._inside.on = False

        return method

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if threading.get_ident() == self._thread and not getattr(self._inside, "on", False):
            what = self._classify(func, args, kwargs)
            if what:
                self.events.append(what)
        return func(*args, **kwargs)

    def _classify(self, func, args, kwargs) -> str | None:
        first = args[0] if args else None
        if func is _aten._local_scalar_dense.default and self._counts(first):
            return "scalar read (item/float/int/bool)"
        if func in (_aten.copy_.default, _aten._copy_from.default) and len(args) > 1:
            dst, src = args[0], args[1]
            if isinstance(src, torch.Tensor) and src.device.type != "cpu" and dst.device.type == "cpu":
                return "device -> host copy"
        to_host = kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "cpu"
        if (
            func is _aten._to_copy.default
            and isinstance(first, torch.Tensor)
            and first.device.type != "cpu"
            and to_host
        ):
            return "device -> host copy"
        if func in _DATA_DEPENDENT and self._counts(first):
            return str(func)
        masks = (
            args[1]
            if func in (_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default) and len(args) > 1
            else ()
        )
        if self._counts(first) and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in masks or ()):
            return f"{func} with a boolean mask"
        return None


class CountingDetector:
    """The real detector, with the transfer count at each call (a call is one frame batch)."""

    def __init__(self, inner, counter: HostSyncCounter):
        self.inner, self.counter = inner, counter
        self.batches: list[int] = []  # frames per call
        self.marks: list[int] = []  # counter.count when the call began
        self.name = inner.name

    def __call__(self, frames):
        self.batches.append(len(frames))
        self.marks.append(self.counter.count)
        return self.inner(frames)


def test_the_counter_sees_each_kind_of_transfer():
    """The counter is what the hot-path test relies on: every kind of read-back counts once, host-side
    numpy and tensors of another device do not."""
    counter = HostSyncCounter("cpu")
    x = torch.arange(6.0)
    with counter:
        x.cpu()
        x.numpy()
        x.tolist()
        x[0].item()
        float(x[1])
        bool(x[2] > 1)
        torch.nonzero(x > 2)
        x[x > 3]
        torch.repeat_interleave(torch.arange(2), torch.tensor([1, 2]))
        np.arange(4).tolist()  # host-side: free
        (x + 1).sum(0)  # stays on the device: free
    assert counter.count == 9, counter.events
    assert counter.events[0] == "Tensor.cpu" and "Tensor.numpy" in counter.events
    other = HostSyncCounter("cuda")
    with other:
        x.numpy()  # a host tensor while the compute device is a GPU: no transfer
    assert other.count == 0


@pytest.fixture(scope="module")
def tiny_models():
    from realtime.cli.common import mega_config
    from realtime.infer import load_models

    return load_models(random_weights=True, config=mega_config("mega_tiny"), seed=0)[0]


def _regressor(models, device: str):
    from realtime.infer import build_regressor

    return build_regressor(models, "torch", None, samples=1, max_batch=32, device=device, precision="fp32")


def _boxes_file(path, frames: int) -> None:
    """Flat rows with ids: 2, 3, 0, 1, ... people per frame (a frame without anyone too)."""
    rows, boxes, ids = [], [], []
    for f in range(frames):
        for k in range([2, 3, 0, 1][f % 4]):
            rows.append(f)
            x, y = 100 + 300 * k + 5 * f, 150 + 20 * k
            boxes.append([x, y, x + 120 + 40 * k, y + 260 + 60 * k])
            ids.append(k)
    np.savez(
        path, frame=np.array(rows, np.int64), boxes_xyxy=np.array(boxes, np.float32), track_id=np.array(ids, np.int64)
    )


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_frame_batch_reads_the_device_back_at_most_twice_and_detects_once(tiny_models, device, assets_dir, tmp_path):
    """On CUDA also: the pinned copy, the lagged read-back, the side-stream frames and the event timer
    give the same results as the CPU run."""
    from realtime.detect import BoxesDetector
    from realtime.pipeline import PipelineOptions, run_pipeline
    from realtime.sources import VideoSource
    from train.assets import find_asset
    from train.synthetic.body import TEMPLATE_ASSET, read_template_ply

    if not STREET.is_file():
        pytest.skip(f"real test videos not found in {STREET.parent}")
    frames, frame_batch = 10, 4
    _boxes_file(tmp_path / "boxes.npz", frames)
    _, faces = read_template_ply(find_asset(TEMPLATE_ASSET))
    regressor = _regressor(tiny_models, device)
    counter = HostSyncCounter(regressor.device)
    detector = CountingDetector(BoxesDetector(tmp_path / "boxes.npz"), counter)
    # smoothing on: it works on the host results and must add no read-back
    opts = PipelineOptions(
        source=str(STREET), results=str(tmp_path / "o.npz"), max_frames=frames, frame_batch=frame_batch, smooth=True
    )
    source = VideoSource(str(STREET), max_frames=frames)
    with counter:
        summary = run_pipeline(opts, source, detector, regressor, faces)
    end = counter.count
    per_batch = [b - a for a, b in zip(detector.marks, detector.marks[1:] + [end])]
    assert summary.frames == frames
    assert detector.batches == [4, 4, 2], "the detector is called once per frame batch, with all its frames"
    budget = MAX_SYNCS_PER_BATCH - DETECTOR_READBACKS  # boxes from a file: nothing to read back for them
    assert max(per_batch) <= budget, (
        f"device -> host transfers per batch {per_batch} (at most {budget}): {counter.events}"
    )
    assert min(per_batch) >= COLLECT_READBACKS, "the collect step reads each batch back: the counter must see it"
    with np.load(tmp_path / "o.npz") as z:  # the one copy is split into the right frames
        expected = np.load(tmp_path / "boxes.npz")
        keep = expected["frame"] < frames
        np.testing.assert_array_equal(z["frame"], expected["frame"][keep])
        np.testing.assert_array_equal(z["box_xyxy"], expected["boxes_xyxy"][keep])
        assert np.isfinite(z["verts"].astype(np.float32)).all()
        cam_crop, tokens = z["cam_crop"], z["tokens"]
    assert {"detect", "crop", "mega", "pose", "collect", "smooth"} <= set(summary.stage_ms)
    if device != "cpu":  # the same frames on the CPU give the same outputs (TF32 convolutions aside)
        opts = PipelineOptions(
            source=str(STREET),
            results=str(tmp_path / "cpu.npz"),
            max_frames=frames,
            frame_batch=frame_batch,
            smooth=True,
        )
        run_pipeline(
            opts,
            VideoSource(str(STREET), max_frames=frames),
            BoxesDetector(tmp_path / "boxes.npz"),
            _regressor(tiny_models, "cpu"),
            faces,
        )
        with np.load(tmp_path / "cpu.npz") as z:
            np.testing.assert_allclose(cam_crop, z["cam_crop"], rtol=1e-2, atol=1e-2)
            assert (tokens == z["tokens"]).mean() > 0.9  # a near-tie between two codes may flip
