"""Offscreen mesh rendering with moderngl over a headless EGL context (NVIDIA driver or Mesa llvmpipe).

Cameras follow `train.geometry` exactly: OpenCV camera frame (x right, y down, z forward) and pixel
u = fx x/z + cx, v = fy y/z + cy with pixel centres at integer (u, v). The conversion to OpenGL clip
space happens only in the vertex shader below, so a projected vertex lands on the rendered pixel.

Two paths share the camera and the shading: `render` returns the image with coverage, mesh ids and
depth (the synthetic clips need them; composited in numpy), `overlay` only the composite over a video
frame, made on the GL side with one read-back (the live overlay).

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


# OpenCV camera frame -> GL clip space. `rows_down` = -1 flips the image (GL's y grows upwards; the
# read-back flips it again), +1 puts image row v at framebuffer row v so a read-back is top row first.
_PROJECT_GLSL = """
uniform vec4 intrinsics;   // fx, fy, cx, cy (OpenCV, pixel centres at integers)
uniform vec2 image_size;   // W, H
uniform vec2 near_far;
uniform float rows_down;
vec4 project_opencv(vec3 p) {
    float z = p.z;
    // (u + 0.5) * z and (v + 0.5) * z: GL puts pixel centres at +0.5, OpenCV at integers
    float uz = intrinsics.x * p.x + (intrinsics.z + 0.5) * z;
    float vz = intrinsics.y * p.y + (intrinsics.w + 0.5) * z;
    float n = near_far.x;
    float f = near_far.y;
    // clip w = z (perspective-correct)
    return vec4(2.0 * uz / image_size.x - z,
                rows_down * (2.0 * vz / image_size.y - z),
                (f + n) / (f - n) * z - 2.0 * f * n / (f - n),
                z);
}
"""

_SHADE_GLSL = """
uniform vec3 light_dir;
uniform float ambient;
uniform float headlight;
uniform float specular;
vec3 shade(vec3 pos, vec3 normal, vec3 color) {
    vec3 view = normalize(-pos);
    vec3 n = normalize(normal);
    if (dot(n, view) < 0.0) n = -n;  // two-sided: meshes may be open or inside out
    float key = max(dot(n, light_dir), 0.0);
    float head = max(dot(n, view), 0.0);
    float diffuse = (1.0 - headlight) * key + headlight * head;
    float spec = specular * pow(max(dot(reflect(-light_dir, n), view), 0.0), 24.0);
    return clamp(color * (ambient + (1.0 - ambient) * diffuse) + spec, 0.0, 1.0);
}
"""

_VERTEX_SHADER = (
    "#version 330\n"
    + _PROJECT_GLSL
    + """
in vec3 in_pos;            // camera frame, OpenCV axes
in vec3 in_normal;
in vec3 in_color;
in float in_mesh;
out vec3 v_pos;
out vec3 v_normal;
out vec3 v_color;
flat out float v_mesh;
void main() {
    gl_Position = project_opencv(in_pos);
    v_pos = in_pos;
    v_normal = in_normal;
    v_color = in_color;
    v_mesh = in_mesh;
}
"""
)

_FRAGMENT_SHADER = (
    "#version 330\n"
    + _SHADE_GLSL
    + """
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_color;
flat in float v_mesh;
layout(location = 0) out vec4 out_color;
layout(location = 1) out vec2 out_aux;
void main() {
    out_color = vec4(shade(v_pos, v_normal, v_color), 1.0);
    out_aux = vec2(v_pos.z, v_mesh + 1.0);
}
"""
)

# The overlay path keeps per-vertex data in 2D float textures TEX_W texels wide, addressed by vertex
# number (gl_VertexID is the index-buffer value), so all meshes of a frame are one upload and one draw.
TEX_W = 4096
_TEXEL_GLSL = f"""
const int TEX_W = {TEX_W};
ivec2 texel(int i) {{ return ivec2(i % TEX_W, i / TEX_W); }}
"""

# Everything per vertex happens once per vertex in a transform-feedback pass (the draw would repeat it
# for every corner): area-weighted normals, each vertex summing cross(b - p, c - p) over its faces with
# (b, c) its two other corners in the face's order (the face normal scaled by twice its area), and the
# colour, per mesh, per vertex or looked up in a colormap.
COLOR_PER_MESH, COLOR_PER_VERTEX, COLOR_BY_VALUE = 0, 1, 2

_VERTEX_PASS_SHADER = (
    "#version 330\n"
    + _TEXEL_GLSL
    + """
uniform sampler2D positions;          // RGB32F, vertex i of mesh m at texel m * num_verts + i
uniform isampler2D corners;           // RG32I, the (b, c) pairs of all vertices, grouped by vertex
uniform isampler2D corners_start;     // R32I, num_verts + 1 offsets into `corners`
uniform sampler2D colors;             // RGB32F: per mesh (texel m) or per vertex
uniform sampler2D values;             // R32F per vertex, looked up in `colormap`
uniform sampler2D colormap;           // RGB32F, L x 1
uniform int color_mode;
uniform int num_verts;
uniform float value_max;
out vec3 out_pos;
out vec3 out_normal;
out vec3 out_color;
out float out_volume;                 // p . (sum of face normals): over a closed mesh, 18 x its signed volume
void main() {
    int mesh = gl_VertexID / num_verts;
    int base = mesh * num_verts;
    int local = gl_VertexID - base;
    vec3 p = texelFetch(positions, texel(gl_VertexID), 0).xyz;
    int begin = texelFetch(corners_start, texel(local), 0).x;
    int end = texelFetch(corners_start, texel(local + 1), 0).x;
    vec3 n = vec3(0.0);
    for (int k = begin; k < end; ++k) {
        ivec2 bc = texelFetch(corners, texel(k), 0).xy;
        vec3 b = texelFetch(positions, texel(base + bc.x), 0).xyz;
        vec3 c = texelFetch(positions, texel(base + bc.y), 0).xyz;
        n += cross(b - p, c - p);
    }
    float len = length(n);
    out_pos = p;
    out_volume = dot(p, n);
    out_normal = len > 1e-12 ? n / len : vec3(0.0);
    if (color_mode == 0) {
        out_color = texelFetch(colors, texel(mesh), 0).rgb;
    } else if (color_mode == 1) {
        out_color = texelFetch(colors, texel(gl_VertexID), 0).rgb;
    } else {
        float top = float(textureSize(colormap, 0).x - 1);
        float level = clamp(texelFetch(values, texel(gl_VertexID), 0).r / value_max * top, 0.0, top);
        out_color = texelFetch(colormap, ivec2(int(level), 0), 0).rgb;
    }
}
"""
)

_OVERLAY_VERTEX_SHADER = (
    "#version 330\n"
    + _PROJECT_GLSL
    + """
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_pos;
out vec3 v_normal;
out vec3 v_color;
void main() {
    gl_Position = project_opencv(in_pos);
    v_pos = in_pos;
    v_normal = in_normal;
    v_color = in_color;
}
"""
)

# Each mesh fragment blends over its own frame pixel. Only the front-most fragment survives the depth
# test, so a mesh behind another never shows through it.
_OVERLAY_FRAGMENT_SHADER = (
    "#version 330\n"
    + _SHADE_GLSL
    + """
uniform sampler2D frame;         // the background, row 0 = top image row = framebuffer row 0
uniform float opacity;
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_color;
out vec4 out_color;
void main() {
    // quantised as an RGBA8 colour target would store it, so the blend matches `render`'s composite
    vec3 c = floor(shade(v_pos, v_normal, v_color) * 255.0 + 0.5) / 255.0;
    vec3 bg = texelFetch(frame, ivec2(gl_FragCoord.xy), 0).rgb;
    out_color = vec4(bg * (1.0 - opacity) + c * opacity, 1.0);
}
"""
)

# distinct default colours (RGB in [0, 1]) when none are given
DEFAULT_COLORS = np.array(
    [
        [0.65, 0.74, 0.86],
        [0.90, 0.60, 0.45],
        [0.60, 0.85, 0.60],
        [0.85, 0.75, 0.45],
        [0.75, 0.60, 0.85],
        [0.55, 0.80, 0.80],
    ],
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


_GL_FINISH = []  # [function or None], resolved once


def finish_without_gil() -> None:
    """Wait for the current GL context's queued work with the GIL released.

    moderngl holds the GIL through every call, also a read-back that waits for the rasteriser (on
    Mesa llvmpipe the whole draw: most of the render stage), so the other threads of the pipeline
    (torch dispatch, the encoder's hand-over) would stall with it. A ctypes call releases the GIL, and
    libglvnd's libGL dispatches glFinish to the context that moderngl made current; the read that
    follows is then a plain copy. Where libGL cannot be loaded this does nothing (the read waits)."""
    if not _GL_FINISH:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("GL")
        try:
            _GL_FINISH.append(ctypes.CDLL(name).glFinish if name else None)
        except (OSError, AttributeError):
            _GL_FINISH.append(None)
    if _GL_FINISH[0] is not None:
        _GL_FINISH[0]()


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
            self.prog["rows_down"].value = -1.0
        self._vbo = self._ibo = self._vao = None
        self._capacity_meshes = self._num_verts = 0
        self._framebuffers: dict[tuple[int, int], tuple] = {}
        self._overlay_gl: _OverlayGL | None = None

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
        self._overlay_gl = None
        self.ctx.release()  # with every object made in it

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
            return RenderResult(
                bg.copy(), np.zeros((h, w), np.float32), np.zeros((h, w), np.int32), np.zeros((h, w), np.float32)
            )
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

    # -- the overlay path: composite on the GPU, one RGB8 read-back -------------------------------------

    def overlay(
        self,
        frame,
        verts_cam,
        camera: Camera,
        colors=None,
        opacity: float = 1.0,
        *,
        vertex_values=None,
        colormap=None,
        value_max: float = 1.0,
    ) -> np.ndarray:
        """Draw meshes (N,V,3) over `frame` and return the composite, (H,W,3) uint8 in the frame's order.

        The same image as `render(verts_cam, camera, colors, frame, opacity).image` without MSAA, made
        on the GL side: the frame is a texture, all meshes are one draw (back faces of closed meshes
        skipped), normals come from a GL pass, the blend happens in the fragment shader and one image is
        read back (RGBA8, the driver's plain copy; cv2 drops the alpha); no mask or depth targets.
        colors: as in `render`. Or vertex_values (N,V) with colormap (L,3) floats in [0, 1]: vertex i is
            coloured colormap[int(clip(value / value_max * (L - 1), 0, L - 1))] (an uncertainty heat-map).
        verts_cam, colors and vertex_values may be numpy arrays or torch tensors on any device (copied
            through the host: the GL buffers are written from host memory).
        """
        frame = np.asarray(frame)
        w, h = camera.width, camera.height
        if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be ({h},{w},3) uint8 to match the camera, got {frame.shape} {frame.dtype}")
        verts = _to_numpy(verts_cam)
        if verts.size == 0:
            return frame.copy()
        if verts.ndim == 2:
            verts = verts[None]
        if verts.ndim != 3 or verts.shape[2] != 3:
            raise ValueError(f"verts_cam must be (N,V,3), got {verts.shape}")
        n, nv, _ = verts.shape
        if self.faces.max() >= nv:
            raise ValueError(f"meshes have {nv} vertices but the faces index vertex {self.faces.max()}")
        with self.ctx:
            if self._overlay_gl is None:
                self._overlay_gl = _OverlayGL(self.ctx, self.faces, self.config)
            gl = self._overlay_gl
            gl.set_meshes(verts)
            if vertex_values is not None:
                if colormap is None:
                    raise ValueError("vertex_values need a colormap (L,3) to look their colours up in")
                gl.set_values(_to_numpy(vertex_values), _to_numpy(colormap), value_max, n, nv)
            else:
                gl.set_colors(colors, n, nv)
            return gl.draw(frame, camera, opacity)


class _OverlayGL:
    """The GL objects of `MeshRenderer.overlay`, created on its first call and grown on demand."""

    def __init__(self, ctx, faces: np.ndarray, config: RendererConfig):
        self.ctx, self.faces = ctx, faces
        self.vertex_prog = ctx.program(
            vertex_shader=_VERTEX_PASS_SHADER,
            varyings=["out_pos", "out_normal", "out_color", "out_volume"],
            varyings_capture_mode="separate",
        )
        self.prog = ctx.program(vertex_shader=_OVERLAY_VERTEX_SHADER, fragment_shader=_OVERLAY_FRAGMENT_SHADER)
        light = np.asarray(config.light_dir, np.float64)
        self.prog["light_dir"].value = tuple(light / np.linalg.norm(light))
        self.prog["ambient"].value = config.ambient
        self.prog["headlight"].value = config.headlight
        self.prog["specular"].value = config.specular
        self.prog["rows_down"].value = 1.0
        self.prog["frame"].value = 4
        units = {"positions": 0, "colors": 1, "values": 2, "colormap": 3, "corners": 5, "corners_start": 6}
        for name, unit in units.items():
            self.vertex_prog[name].value = unit
        self.vertex_vao = ctx.vertex_array(self.vertex_prog, [])
        self._per_capacity: list = []
        self._num_verts = self._capacity = 0
        self._targets: dict[tuple[int, int], tuple] = {}
        self._colormap = self._colormap_key = None

    def _texture(self, texels: int, components: int, dtype: str):
        """A TEX_W-wide texture for `texels` values (nearest lookups only)."""
        tex = self.ctx.texture((TEX_W, max(1, -(-texels // TEX_W))), components, dtype=dtype)
        tex.filter = (self.ctx.NEAREST, self.ctx.NEAREST)
        return tex

    @staticmethod
    def _write(tex, data: np.ndarray):
        """Writes the rows `data` (flat, texel-major) covers; the last one padded with zeros."""
        per_row = TEX_W * tex.components
        rows = -(-data.size // per_row)
        if data.size != rows * per_row:
            data = np.concatenate([data.ravel(), np.zeros(rows * per_row - data.size, data.dtype)])
        tex.write(np.ascontiguousarray(data), viewport=(0, 0, TEX_W, rows))

    def _ensure(self, n: int, nv: int):
        if nv != self._num_verts:
            self._build_topology(nv)
        if n <= self._capacity:
            return
        capacity = max(n, 2 * self._capacity, 4)
        for old in self._per_capacity:
            old.release()
        self.positions = self._texture(capacity * nv, 3, "f4")
        self.colors = self._texture(capacity * nv, 3, "f4")
        self.values = self._texture(capacity * nv, 1, "f4")
        # the vertex pass writes position, normal, colour and volume term each to its own buffer
        self.vertex_out = [self.ctx.buffer(reserve=capacity * nv * 4 * size) for size in (3, 3, 3, 1)]
        index = (self.faces[None] + nv * np.arange(capacity)[:, None, None]).astype(np.uint32)
        self.index = self.ctx.buffer(index.tobytes())
        self.draw_vao = self.ctx.vertex_array(
            self.prog,
            [(buf, "3f", name) for buf, name in zip(self.vertex_out, ("in_pos", "in_normal", "in_color"))],
            self.index,
        )
        self._per_capacity = [self.positions, self.colors, self.values, *self.vertex_out, self.index, self.draw_vao]
        self._volume = np.empty(capacity * nv, np.float32)
        self._capacity = capacity

    def _build_topology(self, nv: int):
        """Per vertex, the other two corners of each of its faces, in the face's cyclic order."""
        f = self.faces.astype(np.int32)
        owner = f.T.ravel()  # corner k of every face, k = 0, 1, 2
        pairs = np.concatenate([f[:, [1, 2]], f[:, [2, 0]], f[:, [0, 1]]])
        order = np.argsort(owner, kind="stable")
        start = np.searchsorted(owner[order], np.arange(nv + 1)).astype(np.int32)
        for name in ("corners", "corners_start"):
            old = getattr(self, name, None)
            if old is not None:
                old.release()
        self.corners = self._texture(len(order), 2, "i4")
        self._write(self.corners, pairs[order].astype(np.int32))
        self.corners_start = self._texture(nv + 1, 1, "i4")
        self._write(self.corners_start, start)
        self._num_verts = nv
        # back faces can be skipped only where every surface is closed: each edge in both directions once
        directed = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).astype(np.int64)
        keys = np.sort(directed[:, 0] * nv + directed[:, 1])
        reverse = np.sort(directed[:, 1] * nv + directed[:, 0])
        self.closed = bool(len(np.unique(keys)) == len(keys) and np.array_equal(keys, reverse))
        self._capacity = 0  # the index buffer depends on nv
        self.vertex_prog["num_verts"].value = nv

    def set_meshes(self, verts: np.ndarray):
        n, nv, _ = verts.shape
        self._ensure(n, nv)
        self._count = n
        self._write(self.positions, verts)

    def set_colors(self, colors, n: int, nv: int):
        if colors is None:
            self._write(self.colors, DEFAULT_COLORS[np.arange(n) % len(DEFAULT_COLORS)])
            mode = COLOR_PER_MESH
        else:
            c = _to_numpy(colors)
            if c.shape == (3,):
                c = np.broadcast_to(c, (n, 3))
            if c.shape == (n, 3):
                mode = COLOR_PER_MESH
            elif c.shape == (n, nv, 3):
                mode = COLOR_PER_VERTEX
            else:
                raise ValueError(f"colors must be (3,), ({n},3) or ({n},{nv},3), got {c.shape}")
            self._write(self.colors, np.ascontiguousarray(c, np.float32))
        self.vertex_prog["color_mode"].value = mode

    def set_values(self, values: np.ndarray, colormap: np.ndarray, value_max: float, n: int, nv: int):
        if values.shape != (n, nv):
            raise ValueError(f"vertex_values must be ({n},{nv}), got {values.shape}")
        if colormap.ndim != 2 or colormap.shape[1] != 3 or not 2 <= len(colormap) <= TEX_W:
            raise ValueError(f"colormap must be (L,3) with 2 <= L <= {TEX_W}, got {colormap.shape}")
        if not value_max > 0:
            raise ValueError(f"value_max must be > 0, got {value_max}")
        key = colormap.tobytes()
        if key != self._colormap_key:
            if self._colormap is not None:
                self._colormap.release()
            self._colormap = self.ctx.texture(
                (len(colormap), 1), 3, np.ascontiguousarray(colormap, np.float32).tobytes(), dtype="f4"
            )
            self._colormap.filter = (self.ctx.NEAREST, self.ctx.NEAREST)
            self._colormap_key = key
        self._write(self.values, values)
        self.vertex_prog["color_mode"].value = COLOR_BY_VALUE
        self.vertex_prog["value_max"].value = float(value_max)

    def _target(self, w: int, h: int):
        key = (w, h)
        if key not in self._targets:
            ctx = self.ctx
            # RGBA8 like the target, so the blit is a plain copy; 3-channel uploads and reads are converted
            # texel by texel in the driver (slower than cv2's conversion on the host)
            frame = ctx.texture((w, h), 4, dtype="f1")
            frame.filter = (ctx.NEAREST, ctx.NEAREST)
            target = ctx.framebuffer([ctx.texture((w, h), 4, dtype="f1")], ctx.depth_renderbuffer((w, h)))
            self._targets[key] = (frame, ctx.framebuffer([frame]), target, np.empty((h, w, 4), np.uint8))
        return self._targets[key]

    def _runs(self) -> list[tuple[int, int, str | None]]:
        """(first mesh, count, front face or None for two-sided) runs: one run when all meshes agree.

        A closed surface seen from outside shows only faces that turn to the camera; which winding that
        is depends on the sign of the mesh's volume (outward or inward normals), summed from the vertex
        pass (one small read-back: N x V floats).
        """
        n, nv = self._count, self._num_verts
        if not self.closed:
            return [(0, n, None)]
        volume = self._volume[: n * nv]
        finish_without_gil()
        self.vertex_out[3].read_into(volume, size=volume.nbytes)
        signs = np.sign(volume.reshape(n, nv).sum(1, dtype=np.float64))
        # rows_down = +1 keeps the image's (u, v) handedness: outward normals wind clockwise on screen
        fronts = ["cw" if v > 0 else "ccw" if v < 0 else None for v in signs]
        runs: list[tuple[int, int, str | None]] = []
        for i, front in enumerate(fronts):
            if runs and runs[-1][2] == front:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1, front)
            else:
                runs.append((i, 1, front))
        return runs

    def draw(self, frame: np.ndarray, camera: Camera, opacity: float) -> np.ndarray:
        w, h = camera.width, camera.height
        for tex, unit in (
            (self.positions, 0),
            (self.colors, 1),
            (self.values, 2),
            (self._colormap, 3),
            (self.corners, 5),
            (self.corners_start, 6),
        ):
            if tex is not None:
                tex.use(unit)
        import cv2

        frame_tex, source, target, staging = self._target(w, h)
        target.use()  # a draw without a complete framebuffer bound is dropped, transform feedback too
        self.vertex_vao.transform(self.vertex_out, mode=self.ctx.POINTS, vertices=self._count * self._num_verts)
        runs = self._runs()
        frame_tex.write(cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA, dst=staging))
        target.color_mask = (False, False, False, False)  # a depth-only clear: the blit sets the colour
        target.clear(depth=1.0)
        target.color_mask = (True, True, True, True)
        self.ctx.copy_framebuffer(target, source)
        self.prog["intrinsics"].value = (camera.fx, camera.fy, camera.cx, camera.cy)
        self.prog["image_size"].value = (float(w), float(h))
        self.prog["near_far"].value = (camera.near, camera.far)
        self.prog["opacity"].value = float(opacity)
        frame_tex.use(4)
        target.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.ctx.disable(self.ctx.BLEND)
        per_mesh = len(self.faces) * 3
        for first, count, front in runs:
            if front is None:
                self.ctx.disable(self.ctx.CULL_FACE)
            else:
                self.ctx.front_face = front
                self.ctx.enable(self.ctx.CULL_FACE)
            self.draw_vao.render(vertices=count * per_mesh, first=first * per_mesh)
        self.ctx.disable(self.ctx.CULL_FACE)
        self.ctx.front_face = "ccw"
        finish_without_gil()
        target.read_into(staging, components=4)
        return cv2.cvtColor(staging, cv2.COLOR_BGRA2BGR)
