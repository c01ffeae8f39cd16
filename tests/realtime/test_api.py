"""The Python API: MeshRecovery on frames and boxes, one batch at a time or streamed, as the CLI runs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import ASSETS

STREET = ASSETS / "video" / "street_720p.avi"


def _frames(n=2):
    import cv2

    if not STREET.is_file():
        pytest.skip(f"{STREET} not found")
    cap = cv2.VideoCapture(str(STREET))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    return frames


@pytest.fixture(scope="module")
def model(assets_dir):
    from realtime import MeshRecovery

    with pytest.warns(UserWarning, match="synthetic people only"):
        return MeshRecovery.from_pretrained("demo", device="cpu", detector="full-frame")


def test_one_frame_gives_people_in_the_camera_frame(model):
    (frame,) = _frames(1)
    people = model(frame)
    assert len(people) == 1  # full-frame: one person filling the frame
    p = people[0]
    assert p.vertices.shape == (6890, 3) and p.faces.shape == (13776, 3)
    assert p.rotation.shape == (3, 3) and np.allclose(p.rotation @ p.rotation.T, np.eye(3), atol=1e-4)
    assert p.cam_t[2] > 0 and p.vertices[:, 2].mean() > 0  # in front of the camera
    np.testing.assert_allclose(p.box_xyxy, [0, 0, frame.shape[1], frame.shape[0]], atol=1)
    assert p.joints is None and p.vertex_std is None
    assert model.weights.source == "demo"


def test_batch_with_given_boxes_and_a_frame_without_people(model):
    first, second = _frames(2)
    frames = [first, second, first]
    boxes = [np.array([[100, 50, 400, 700], [600, 80, 900, 700]]), np.zeros((0, 4)), np.array([[100, 50, 400, 700]])]
    out = model(frames, boxes=boxes)
    assert [len(p) for p in out] == [2, 0, 1]
    np.testing.assert_allclose(out[0][1].box_xyxy, [600, 80, 900, 700])
    # the same crop of the same frame gives the same mesh, whatever else is in the batch
    np.testing.assert_allclose(out[0][0].vertices, out[2][0].vertices, atol=1e-4)
    with pytest.raises(ValueError, match="one \\(K,4\\) array per frame"):
        model(frames, boxes=boxes[:2])
    with pytest.raises(ValueError, match="uint8 BGR"):
        model(np.zeros((8, 8), np.float32))


def test_stream_yields_every_frame(model):
    got = list(model.stream(STREET, max_frames=3))
    assert [f.index for f in got] == [0, 1, 2] and all(len(f.people) == 1 for f in got)
    assert got[0].image_bgr.shape == (720, 1280, 3)


def test_stochastic_mode_has_a_per_vertex_spread_and_joints(assets_dir, tmp_path):
    from realtime import MeshRecovery

    reg = tmp_path / "J_regressor_h36m.npy"
    w = np.zeros((17, 6890), np.float32)
    w[np.arange(17), np.arange(17) * 100] = 1.0  # joint j = vertex 100 j
    np.save(reg, w)
    with pytest.warns(UserWarning):
        model = MeshRecovery.from_pretrained(
            "demo", device="cpu", samples=4, steps=2, regressor=str(reg), detector="full-frame"
        )
    (frame,) = _frames(1)
    (p,) = model(frame)
    assert p.vertex_std.shape == (6890,) and np.all(p.vertex_std >= 0) and p.vertex_std.max() > 0
    np.testing.assert_allclose(p.joints, p.vertices[np.arange(17) * 100], atol=1e-6)
