"""Offscreen mesh rendering with moderngl over a headless EGL context (NVIDIA driver or Mesa llvmpipe).

Cameras follow `train.geometry` exactly: OpenCV camera frame (x right, y down, z forward) and pixel
u = fx x/z + cx, v = fy y/z + cy with pixel centres at integer (u, v). The conversion to OpenGL clip
space happens only in the vertex shader below, so a projected vertex lands on the rendered pixel.

One renderer = one GL context, created once; the vertex/index buffers and framebuffers are reused
across frames and only grow. moderngl is imported inside the class (DESIGN.md, style 9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class RendererUnavailable(RuntimeError):
    """No headless OpenGL context could be created; the message says what to install."""


@dataclass(frozen=True)
class Camera:
    """A pinhole camera in the OpenCV convention of `train.geometry` (pixels)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    near: float = 0.05  # metres; the depth range of the z-buffer
    far: float = 500.0

    @classmethod
    def centred(cls, width: int, height: int, focal: float, **kw) -> "Camera":
        """Principal point at the image centre, as `train.geometry.cam_crop_to_full` assumes."""
        return cls(width, height, focal, focal, width / 2.0, height / 2.0, **kw)


@dataclass(frozen=True)
class RendererConfig:
    samples: int = 0  # MSAA samples for the colour image (0 = off); mask and depth are never blended
    ambient: float = 0.35
    light_dir: tuple[float, float, float] = (-0.35, -0.6, -0.72)  # camera frame, towards the light: up-left-front
    headlight: float = 0.35  # share of the diffuse light coming from the camera, so no side is black
    specular: float = 0.12


@dataclass(frozen=True)
class RenderResult:
    image: np.ndarray  # (H,W,3) uint8: the meshes alpha-composited over the background
    alpha: np.ndarray  # (H,W) float32 coverage x opacity (fractional at edges with MSAA)
    mask: np.ndarray  # (H,W) int32: 0 = no mesh, i + 1 = mesh i is the front-most surface
    depth: np.ndarray  # (H,W) float32 camera-frame z of the front-most surface, 0 where no mesh


_VERTEX_SHADER = """
#version 330
uniform vec4 intrinsics;   // fx, fy, cx, cy (OpenCV, pixel centres at integers)
uniform vec2 image_size;   // W, H
uniform vec2 near_far;
in vec3 in_pos;            // camera frame, OpenCV axes
in vec3 in_normal;
in vec3 in_color;
in float in_mesh;
out vec3 v_pos;
out vec3 v_normal;
out vec3 v_color;
flat out float v_mesh;
void main() {
    float z = in_pos.z;
    // (u + 0.5) * z and (v + 0.5) * z: GL puts pixel centres at +0.5, OpenCV at integers
    float uz = intrinsics.x * in_pos.x + (intrinsics.z + 0.5) * z;
    float vz = intrinsics.y * in_pos.y + (intrinsics.w + 0.5) * z;
    float n = near_far.x;
    float f = near_far.y;
    // clip w = z (perspective-correct); image rows grow downwards, GL's y upwards: flipped on read-back
    gl_Position = vec4(2.0 * uz / image_size.x - z,
                       z - 2.0 * vz / image_size.y,
                       (f + n) / (f - n) * z - 2.0 * f * n / (f - n),
                       z);
    v_pos = in_pos;
    v_normal = in_normal;
    v_color = in_color;
    v_mesh = in_mesh;
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform vec3 light_dir;
uniform float ambient;
uniform float headlight;
uniform float specular;
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_color;
flat in float v_mesh;
layout(location = 0) out vec4 out_color;
layout(location = 1) out vec2 out_aux;
void main() {
    vec3 view = normalize(-v_pos);
    vec3 n = normalize(v_normal);
    if (dot(n, view) < 0.0) n = -n;  // two-sided: meshes may be open or inside out
    float key = max(dot(n, light_dir), 0.0);
    float head = max(dot(n, view), 0.0);
    float diffuse = (1.0 - headlight) * key + headlight * head;
    float spec = specular * pow(max(dot(reflect(-light_dir, n), view), 0.0), 24.0);
    vec3 c = v_color * (ambient + (1.0 - ambient) * diffuse) + spec;
    out_color = vec4(clamp(c, 0.0, 1.0), 1.0);
    out_aux = vec2(v_pos.z, v_mesh + 1.0);
}
"""

# distinct default colours (RGB in [0, 1]) when none are given
DEFAULT_COLORS = np.array(
    [[0.65, 0.74, 0.86], [0.90, 0.60, 0.45], [0.60, 0.85, 0.60], [0.85, 0.75, 0.45], [0.75, 0.60, 0.85], [0.55, 0.80, 0.80]],
    np.float32,
)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor on any device
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N,V,3) area-weighted vertex normals (unit length)."""
    v0, v1, v2 = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]
    face_n = np.cross(v1 - v0, v2 - v0)  # (N,F,3), length = 2 x area
    normals = np.zeros_like(verts)
    for corner in range(3):
        # np.add.at is slow; a per-axis bincount does the same scatter-add
        for axis in range(3):
            normals[:, :, axis] += np.stack(
                [np.bincount(faces[:, corner], weights=fn[:, axis], minlength=verts.shape[1]) for fn in face_n]
            )
    return normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)


def _egl_error(err: Exception) -> RendererUnavailable:
    return RendererUnavailable(
        f"cannot open a headless OpenGL (EGL) device: {err}. Install EGL and an OpenGL driver: "
        "`apt-get install libegl1 libgl1 libgl1-mesa-dri` (Mesa llvmpipe, CPU) or, on NVIDIA GPUs, "
        "the driver's EGL/GL libraries (libnvidia-gl-<driver version>)"
    )


class MeshRenderer:
    """Renders any number of meshes that share `faces` (e.g. SMPL-topology people) per frame."""

    def __init__(self, faces, config: RendererConfig = RendererConfig()):
        try:
            import moderngl
        except ImportError as e:
            raise RendererUnavailable(f"moderngl is not installed ({e}): pip install 'mega-rt[render]'") from None
        try:
            self.ctx = moderngl.create_context(standalone=True, backend="egl", require=330)
        except Exception as e:  # glcontext raises plain Exceptions naming the failing EGL call
            raise _egl_error(e) from None
        self.config = config
        self.faces = _to_numpy(faces).astype(np.int64)
        with self.ctx:  # several renderers may live in one thread: each call makes its own context current
            self.prog = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
            light = np.asarray(config.light_dir, np.float64)
            self.prog["light_dir"].value = tuple(light / np.linalg.norm(light))
            self.prog["ambient"].value = config.ambient
            self.prog["headlight"].value = config.headlight
            self.prog["specular"].value = config.specular
        self._vbo = self._ibo = self._vao = None
        self._capacity_meshes = self._num_verts = 0
        self._framebuffers: dict[tuple[int, int], tuple] = {}

    # -- resources, grown on demand and reused ------------------------------------------------------

    def _ensure_buffers(self, num_meshes: int, num_verts: int):
        if num_meshes <= self._capacity_meshes and num_verts == self._num_verts:
            return
        capacity = max(num_meshes, 2 * self._capacity_meshes, 4)
        index = (self.faces[None] + num_verts * np.arange(capacity)[:, None, None]).astype(np.uint32)
        if self._vao is not None:
            self._vao.release()
            self._vbo.release()
            self._ibo.release()
        self._vbo = self.ctx.buffer(reserve=capacity * num_verts * 10 * 4, dynamic=True)
        self._ibo = self.ctx.buffer(index.tobytes())
        self._vao = self.ctx.vertex_array(
            self.prog, [(self._vbo, "3f 3f 3f 1f", "in_pos", "in_normal", "in_color", "in_mesh")], self._ibo
        )
        self._capacity_meshes = capacity
        self._num_verts = num_verts

    def _framebuffer(self, width: int, height: int):
        key = (width, height)
        if key not in self._framebuffers:
            ctx = self.ctx
            color = ctx.texture((width, height), 4, dtype="f1")
            aux = ctx.texture((width, height), 2, dtype="f4")
            mrt = ctx.framebuffer([color, aux], ctx.depth_renderbuffer((width, height)))
            msaa = resolved = None
            if self.config.samples > 0:
                msaa = ctx.framebuffer(
                    ctx.renderbuffer((width, height), 4, samples=self.config.samples),
                    ctx.depth_renderbuffer((width, height), samples=self.config.samples),
                )
                # a single-attachment target: a blit into `mrt` would also write its float aux texture
                resolved = ctx.framebuffer(ctx.texture((width, height), 4, dtype="f1"))
            self._framebuffers[key] = (mrt, msaa, resolved)
        return self._framebuffers[key]

    def close(self):
        self.ctx.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- drawing ------------------------------------------------------------------------------------

    def render(self, verts_cam, camera: Camera, colors=None, background=None, opacity: float = 1.0) -> RenderResult:
        """Draw meshes (N,V,3) given in the OpenCV camera frame (metres) and composite them.

        colors: None (a default palette), (3,) or (N,3) base colour per mesh, or (N,V,3) per-vertex
            colours (e.g. an uncertainty heat-map), floats in [0, 1] in the background's channel order.
        background: (H,W,3) uint8 frame to composite over (black if None).
        opacity: 1 paints the meshes; less lets the frame show through.
        """
        verts = _to_numpy(verts_cam)
        if verts.ndim == 2:
            verts = verts[None]
        n, nv, _ = verts.shape
        w, h = camera.width, camera.height
        bg = np.zeros((h, w, 3), np.uint8) if background is None else np.asarray(background)
        if bg.shape != (h, w, 3) or bg.dtype != np.uint8:
            raise ValueError(f"background must be ({h},{w},3) uint8 to match the camera, got {bg.shape} {bg.dtype}")
        if n == 0:
            return RenderResult(bg.copy(), np.zeros((h, w), np.float32), np.zeros((h, w), np.int32), np.zeros((h, w), np.float32))
        if self.faces.max() >= nv:
            raise ValueError(f"meshes have {nv} vertices but the faces index vertex {self.faces.max()}")
        cols = self._vertex_colors(colors, n, nv)

        data = np.empty((n, nv, 10), np.float32)
        data[..., 0:3] = verts
        data[..., 3:6] = vertex_normals(verts, self.faces)
        data[..., 6:9] = cols
        data[..., 9] = np.arange(n, dtype=np.float32)[:, None]
        with self.ctx:
            rgba, aux = self._draw(data, camera)
        mask = np.rint(aux[..., 1]).astype(np.int32)
        alpha = rgba[..., 3].astype(np.float32) * (opacity / 255.0)
        image = self._composite(bg, rgba, alpha)
        return RenderResult(image, alpha, mask, np.ascontiguousarray(aux[..., 0]))

    def _draw(self, data: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
        """Draw the (N,V,10) vertex data; returns RGBA (H,W,4) uint8 and (z, mesh + 1) (H,W,2), top row first."""
        n, nv = data.shape[:2]
        w, h = camera.width, camera.height
        self._ensure_buffers(n, nv)
        self._vbo.write(data.tobytes())

        self.prog["intrinsics"].value = (camera.fx, camera.fy, camera.cx, camera.cy)
        self.prog["image_size"].value = (float(w), float(h))
        self.prog["near_far"].value = (camera.near, camera.far)
        mrt, msaa, resolved = self._framebuffer(w, h)
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.ctx.disable(self.ctx.CULL_FACE | self.ctx.BLEND)
        vertices = n * len(self.faces) * 3

        mrt.use()
        mrt.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self._vao.render(vertices=vertices)
        aux = np.frombuffer(mrt.read(attachment=1, components=2, dtype="f4"), np.float32).reshape(h, w, 2)[::-1]
        color_source = mrt
        if msaa is not None:
            msaa.use()
            msaa.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            self._vao.render(vertices=vertices)
            self.ctx.copy_framebuffer(resolved, msaa)  # averages the samples: coverage lands in alpha
            color_source = resolved
        rgba = np.frombuffer(color_source.read(attachment=0, components=4, dtype="f1"), np.uint8).reshape(h, w, 4)[::-1]
        return rgba, aux

    @staticmethod
    def _vertex_colors(colors, n: int, nv: int) -> np.ndarray:
        if colors is None:
            return np.broadcast_to(DEFAULT_COLORS[np.arange(n) % len(DEFAULT_COLORS)][:, None], (n, nv, 3))
        c = _to_numpy(colors)
        if c.shape == (3,):
            c = c[None]
        if c.shape == (n, 3):
            return np.broadcast_to(c[:, None], (n, nv, 3))
        if c.shape == (n, nv, 3):
            return c
        raise ValueError(f"colors must be (3,), ({n},3) or ({n},{nv},3), got {c.shape}")

    @staticmethod
    def _composite(bg: np.ndarray, rgba: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        out = bg.copy()
        covered = alpha > 0
        a = alpha[covered][:, None]
        # MSAA resolves premultiplied colour (cleared to 0): divide by coverage before blending
        coverage = np.maximum(rgba[..., 3][covered][:, None].astype(np.float32) / 255.0, 1e-6)
        colour = np.clip(rgba[..., :3][covered].astype(np.float32) / coverage, 0, 255)
        out[covered] = np.rint(bg[covered] * (1 - a) + colour * a).astype(np.uint8)
        return out
