"""The EGL mesh renderer (train/render.py): exact camera conventions, masks, depth, compositing.

The reference silhouette is drawn without OpenGL: vertices projected with `train.geometry.project`
and every triangle filled with cv2.fillConvexPoly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train.geometry import axis_angle_to_matrix, project
from train.render import Camera, MeshRenderer, RendererConfig, RendererUnavailable
from train.synthetic import body as B
from train.synthetic.poses import walking_pose


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
    uv = np.rint(
        project(torch.from_numpy(verts)[None], torch.tensor([CAM.fx, CAM.fy]), torch.tensor([CAM.cx, CAM.cy]))[
            0
        ].numpy()
    ).astype(int)
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
    uv = project(torch.from_numpy(verts)[None], torch.tensor([CAM.fx, CAM.fy]), torch.tensor([CAM.cx, CAM.cy]))[
        0
    ].numpy()
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
    colours = np.where(
        model.verts_template[:, :1].numpy() > model.joints_rest[0, 0].item(), [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]
    )
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


# -- the overlay path (composite on the GL side) -----------------------------------------------------


def test_the_overlay_waits_for_the_rasteriser_with_the_gil_released(renderer):
    """moderngl holds the GIL while a read-back waits for the draw; the overlay waits first through a
    ctypes glFinish (a CDLL call, which releases the GIL) so the pipeline's other threads keep running."""
    import ctypes

    from train import render

    with renderer.ctx:
        render.finish_without_gil()
    finish = render._GL_FINISH[0]
    assert finish is not None, "libGL's glFinish was not found: read-backs would stall every Python thread"
    assert not finish._flags_ & ctypes._FUNCFLAG_PYTHONAPI


def three_people(model, cam: Camera) -> np.ndarray:
    """Three walking people across the frame, the right one partly behind the middle one."""
    scale = cam.width / CAM.width
    return np.stack(
        [
            person_cam(model, yaw=0.6, at=(-0.9 * scale, 0.05, 3.6), phase=0.3),
            person_cam(model, yaw=-0.4, at=(0.0, 0.0, 3.0), phase=1.4),
            person_cam(model, yaw=2.5, at=(0.45 * scale, -0.05, 4.2), phase=2.6),
        ]
    ).astype(np.float32)


def textured_frame(cam: Camera, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(110, 45, (cam.height, cam.width, 3)), 0, 255).astype(np.uint8)


def assert_close_pixels(got: np.ndarray, want: np.ndarray):
    assert got.shape == want.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.mean() < 1.0 and np.percentile(diff, 99.9) <= 3, (diff.mean(), np.percentile(diff, 99.9), diff.max())


WIDE = Camera.centred(960, 540, 1100.0)


@pytest.mark.parametrize("opacity", [0.85, 1.0])
@pytest.mark.parametrize("colouring", ["per mesh", "per vertex"])
def test_overlay_gives_the_composite_of_render(renderer, model, opacity, colouring):
    verts = three_people(model, WIDE)
    frame = textured_frame(WIDE)
    if colouring == "per mesh":
        colors = np.array([[0.9, 0.6, 0.45], [0.6, 0.85, 0.6], [0.65, 0.74, 0.86]], np.float32)
    else:  # a smooth ramp over the height, as the uncertainty heat-map gives
        t = (verts[..., 1] - verts[..., 1].min()) / np.ptp(verts[..., 1])
        colors = np.stack([t, 1 - t, 0.5 + 0.0 * t], -1).astype(np.float32)
    want = renderer.render(verts, WIDE, colors, frame, opacity).image
    got = renderer.overlay(frame, verts, WIDE, colors, opacity)
    assert_close_pixels(got, want)
    assert (got != frame).any(axis=-1).mean() > 0.1  # the people are drawn


def test_overlay_looks_vertex_values_up_in_a_colormap(renderer, model):
    verts = three_people(model, WIDE)
    frame = textured_frame(WIDE, seed=1)
    values = np.linalg.norm(verts - verts.mean(1, keepdims=True), axis=-1).astype(np.float32)  # 0 .. ~1 m
    ramp = np.linspace(0, 1, 256, dtype=np.float32)
    colormap = np.stack([ramp, ramp[::-1], np.full(256, 0.3, np.float32)], 1)
    levels = np.clip(values / 0.8 * 255.0, 0, 255).astype(np.uint8)
    want = renderer.render(verts, WIDE, colormap[levels], frame, 0.85).image
    got = renderer.overlay(frame, verts, WIDE, opacity=0.85, vertex_values=values, colormap=colormap, value_max=0.8)
    assert_close_pixels(got, want)


def test_overlay_takes_torch_tensors_and_odd_sizes(renderer, model):
    cam = Camera.centred(641, 359, 700.0)
    verts = three_people(model, cam)
    frame = textured_frame(cam, seed=2)
    want = renderer.render(verts, cam, None, frame, 0.85).image
    got = renderer.overlay(frame, torch.from_numpy(verts), cam, None, 0.85)
    assert got.shape == (359, 641, 3)
    assert_close_pixels(got, want)


def test_overlay_of_no_people_is_the_frame(renderer):
    frame = textured_frame(WIDE, seed=3)
    for empty in (np.zeros((0, B.NUM_VERTS, 3), np.float32), torch.zeros(0, B.NUM_VERTS, 3)):
        out = renderer.overlay(frame, empty, WIDE, opacity=0.85)
        assert np.array_equal(out, frame) and out is not frame


def test_overlay_culls_by_each_mesh_orientation_and_keeps_open_meshes_two_sided(model):
    """Back faces are skipped on closed meshes, whichever way their faces wind (reversed faces turn
    the normals inwards); an open mesh (a quad seen from behind) stays two-sided."""
    verts = three_people(model, WIDE)
    frame = textured_frame(WIDE, seed=4)
    try:
        flipped = MeshRenderer(np.asarray(model.faces)[:, ::-1].copy())
        quad_renderer = MeshRenderer(np.array([[0, 1, 2], [0, 2, 3]]))
    except RendererUnavailable as e:
        pytest.skip(str(e))
    with flipped, quad_renderer:
        assert_close_pixels(
            flipped.overlay(frame, verts, WIDE, opacity=0.85), flipped.render(verts, WIDE, None, frame, 0.85).image
        )
        # one mesh mirrored (x -> -x turns it inside out) among normal ones: two runs of culling
        mixed = verts.copy()
        mixed[1, :, 0] = -mixed[1, :, 0]
        assert_close_pixels(
            flipped.overlay(frame, mixed, WIDE, opacity=1.0), flipped.render(mixed, WIDE, None, frame, 1.0).image
        )
        quad = np.array([[[-0.5, -0.4, 3.0], [0.5, -0.4, 3.0], [0.5, 0.4, 3.0], [-0.5, 0.4, 3.0]]], np.float32)
        for q in (quad, quad[:, ::-1].copy()):
            got = quad_renderer.overlay(frame, q, WIDE, (0.2, 0.5, 0.9), 1.0)
            assert_close_pixels(got, quad_renderer.render(q, WIDE, (0.2, 0.5, 0.9), frame, 1.0).image)
            assert (got != frame).any(axis=-1).sum() > 10000


def test_overlay_rejects_a_frame_of_another_size(renderer, model):
    with pytest.raises(ValueError, match="frame must be"):
        renderer.overlay(np.zeros((10, 10, 3), np.uint8), person_cam(model), WIDE)
    with pytest.raises(ValueError, match="vertex_values must be"):
        renderer.overlay(
            textured_frame(WIDE), person_cam(model)[None], WIDE, vertex_values=np.zeros(3), colormap=np.zeros((256, 3))
        )
