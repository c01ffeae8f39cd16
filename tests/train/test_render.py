"""The EGL mesh renderer (train/render.py): exact camera conventions, masks, depth, compositing.

The reference silhouette is drawn without OpenGL: vertices projected with `train.geometry.project`
and every triangle filled with cv2.fillConvexPoly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train.render import Camera, MeshRenderer, RendererConfig, RendererUnavailable
from train.synthetic import body as B
from train.synthetic.poses import walking_pose
from train.geometry import axis_angle_to_matrix, project


def person_cam(model, yaw=0.5, at=(0.0, 0.0, 2.8), phase=1.0):
    """A walking pose, turned by `yaw`, upright in the OpenCV camera frame, pelvis at `at` (metres)."""
    pose = walking_pose(torch.tensor([phase]))
    out = model.pose(pose, torch.tensor([[0.0, yaw, 0.0]]))
    to_cam = axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))  # body y up -> camera y down
    return ((out.verts[0] - out.joints[0, 0]) @ to_cam.T + torch.tensor(at)).numpy()


def reference_silhouette(verts_cam, faces, cam: Camera) -> np.ndarray:
    import cv2

    uv = project(torch.from_numpy(verts_cam)[None], torch.tensor([cam.fx, cam.fy]), torch.tensor([cam.cx, cam.cy]))[0]
    fixed = np.rint(uv.numpy() * 16).astype(np.int32)  # 4 fractional bits
    mask = np.zeros((cam.height, cam.width), np.uint8)
    for tri in fixed[np.asarray(faces)]:
        cv2.fillConvexPoly(mask, tri, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


# a camera with fx != fy and an off-centre principal point, so a swapped or dropped term shows
CAM = Camera(width=400, height=520, fx=700.0, fy=680.0, cx=190.3, cy=268.7)


def test_silhouette_matches_projected_triangles(renderer, model):
    import cv2

    verts = person_cam(model)
    res = renderer.render(verts[None], CAM)
    ref = reference_silhouette(verts, model.faces, CAM)
    got = res.mask > 0
    iou = (got & ref).sum() / (got | ref).sum()
    assert ref.sum() > 20000  # the person is large in the frame
    assert iou >= 0.97, iou
    # every projected vertex lands on the rendered silhouette (to the pixel: outline vertices round
    # either way)
    uv = np.rint(project(torch.from_numpy(verts)[None], torch.tensor([CAM.fx, CAM.fy]), torch.tensor([CAM.cx, CAM.cy]))[0].numpy()).astype(int)
    assert (uv >= 0).all() and (uv[:, 0] < CAM.width).all() and (uv[:, 1] < CAM.height).all()
    near_silhouette = cv2.dilate(got.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert near_silhouette[uv[:, 1], uv[:, 0]].all()
    assert got[uv[:, 1], uv[:, 0]].mean() > 0.95


def test_pixel_centres_and_axes_follow_opencv():
    """A square whose projected edges sit a quarter pixel past integers: OpenCV puts pixel centres at
    integers, so exactly columns 11..20 and rows 31..45 are covered (half a pixel off would give
    10..19; a flipped axis, other rows)."""
    cam = Camera(width=64, height=80, fx=100.0, fy=120.0, cx=30.0, cy=35.0)
    z = 2.0
    (u0, u1), (v0, v1) = (10.25, 20.25), (30.25, 45.25)
    x = [(u - cam.cx) * z / cam.fx for u in (u0, u1)]
    y = [(v - cam.cy) * z / cam.fy for v in (v0, v1)]
    quad = np.array([[x[0], y[0], z], [x[1], y[0], z], [x[1], y[1], z], [x[0], y[1], z]], np.float32)
    try:
        r = MeshRenderer(np.array([[0, 1, 2], [0, 2, 3]]))
    except RendererUnavailable as e:
        pytest.skip(str(e))
    with r:
        res = r.render(quad[None], cam)
    rows, cols = np.nonzero(res.mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (31, 45, 11, 20)
    assert res.mask.sum() == 15 * 10
    np.testing.assert_allclose(res.depth[res.mask > 0], z, rtol=1e-5)


def test_projected_box_equals_rendered_alpha_box(renderer, model):
    verts = person_cam(model, yaw=-0.8, at=(0.2, -0.1, 5.0))
    res = renderer.render(verts[None], CAM)
    uv = project(torch.from_numpy(verts)[None], torch.tensor([CAM.fx, CAM.fy]), torch.tensor([CAM.cx, CAM.cy]))[0].numpy()
    ys, xs = np.nonzero(res.alpha > 0)
    rendered = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
    projected = np.concatenate([uv.min(0), uv.max(0)])
    assert np.abs(rendered - projected).max() <= 2.0, (rendered, projected)


def test_two_overlapping_people_are_depth_ordered(renderer, model):
    import cv2

    near = person_cam(model, yaw=0.3, at=(0.0, 0.0, 3.0))
    far = person_cam(model, yaw=-0.3, at=(0.25, -0.05, 4.5))
    red, blue = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    a = renderer.render(np.stack([far, near]), CAM, np.stack([blue, red]))
    b = renderer.render(np.stack([near, far]), CAM, np.stack([red, blue]))
    near_alone = reference_silhouette(near, model.faces, CAM)
    far_alone = reference_silhouette(far, model.faces, CAM)
    # both cover these pixels, away from the near person's outline (where rasterisers may differ)
    overlap = cv2.erode(near_alone.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & far_alone
    assert overlap.sum() > 2000
    # the near person wins wherever both cover a pixel, whatever the draw order
    assert (a.mask[overlap] == 2).mean() > 0.99 and (b.mask[overlap] == 1).mean() > 0.99
    assert (a.image[overlap][:, 0] > a.image[overlap][:, 2]).mean() > 0.99  # red over blue
    assert np.array_equal(a.image, b.image)
    # depth is the camera z of the front surface
    for index, person in ((2, near), (1, far)):
        z = a.depth[a.mask == index]
        assert (z > person[:, 2].min() - 1e-3).all() and (z < person[:, 2].max() + 1e-3).all()
    assert (a.depth[a.mask == 0] == 0).all()


def test_per_vertex_colours_and_opacity_composite_over_the_frame(renderer, model):
    verts = person_cam(model, yaw=0.0)  # facing the camera: its left (+x body) is on the image right
    colours = np.where(model.verts_template[:, :1].numpy() > model.joints_rest[0, 0].item(), [0.0, 1.0, 0.0], [1.0, 0.0, 1.0])
    background = np.full((CAM.height, CAM.width, 3), 200, np.uint8)
    res = renderer.render(verts[None], CAM, colours[None].astype(np.float32), background)
    cx = CAM.cx
    right_half = (res.mask > 0) & (np.arange(CAM.width) > cx + 15)[None]
    left_half = (res.mask > 0) & (np.arange(CAM.width) < cx - 15)[None]
    assert (res.image[right_half][:, 1] > res.image[right_half][:, 0]).mean() > 0.95  # green on the body's left
    assert (res.image[left_half][:, 0] > res.image[left_half][:, 1]).mean() > 0.95
    assert (res.image[res.mask == 0] == 200).all()  # untouched frame outside the person
    opaque = renderer.render(verts[None], CAM, (0.1, 0.2, 0.9), background)
    half = renderer.render(verts[None], CAM, (0.1, 0.2, 0.9), background, opacity=0.5)
    inside = half.mask > 0
    expected = (opaque.image[inside].astype(int) + 200) / 2
    assert np.abs(half.image[inside] - expected).max() <= 1
    assert np.allclose(half.alpha[inside], 0.5) and (half.image[~inside] == 200).all()


def test_any_number_of_meshes_and_sizes_reuse_one_context(renderer, model):
    verts = person_cam(model)
    for n, cam in ((1, CAM), (5, Camera.centred(200, 150, 300.0)), (2, CAM)):
        stack = np.stack([verts + np.array([0.6 * (i - (n - 1) / 2), 0.0, 1.5 * i]) for i in range(n)])
        res = renderer.render(stack, cam)
        assert res.image.shape == (cam.height, cam.width, 3)
        assert set(np.unique(res.mask)) <= set(range(n + 1)) and res.mask.max() >= 1
    empty = renderer.render(np.zeros((0, B.NUM_VERTS, 3), np.float32), CAM)
    assert not empty.image.any() and not empty.mask.any()


def test_msaa_gives_soft_edges_and_the_same_mask(model, renderer):
    try:
        smooth = MeshRenderer(model.faces, RendererConfig(samples=4))
    except RendererUnavailable as e:
        pytest.skip(str(e))
    with smooth:
        verts = person_cam(model)
        soft = smooth.render(verts[None], CAM)
    hard = renderer.render(verts[None], CAM)
    assert np.array_equal(soft.mask, hard.mask)
    edge = (soft.alpha > 0) & (soft.alpha < 1)
    assert edge.sum() > 200 and set(np.unique(hard.alpha)) <= {0.0, 1.0}


def test_missing_egl_raises_a_one_line_install_hint(monkeypatch):
    moderngl = pytest.importorskip("moderngl")

    def no_egl(*args, **kwargs):
        raise Exception("eglGetDisplay failed (0x3000)")

    monkeypatch.setattr(moderngl, "create_context", no_egl)
    with pytest.raises(RendererUnavailable) as err:
        MeshRenderer(np.zeros((1, 3), np.int64))
    message = str(err.value)
    assert "\n" not in message and "eglGetDisplay failed" in message and "apt-get install libegl1" in message
