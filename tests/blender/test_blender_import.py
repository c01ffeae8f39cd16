"""Blender opens the exported files: glTF importer (skinned and morph-target GLB), BVH importer, OBJ +
Mesh Cache modifier (PC2), each compared at several frames with the vertices (joints for BVH) they must
show, within 1 mm. Runs with bpy in its own environment: `make test-blender` (which first writes the
files with tests/blender/make_files.py and points MEGA_RT_BLENDER_FILES at them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy", reason="needs bpy (Blender as a Python module): run `make test-blender`")
FILES = Path(os.environ.get("MEGA_RT_BLENDER_FILES", "missing"))
if not (FILES / "expected.npz").is_file():
    pytest.skip("no files to import: MEGA_RT_BLENDER_FILES unset (run `make test-blender`)", allow_module_level=True)
TOL = 1e-3


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FILES / "expected.npz"))


def to_blender(points):
    """Y-up world (glTF, BVH, OBJ) -> Blender's Z-up, as its importers convert: (x, y, z) -> (x, -z, y)."""
    p = np.asarray(points)
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], -1)


def fresh_scene(fps):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.render.fps = int(round(fps))
    bpy.context.scene.render.fps_base = 1.0


def evaluated_world_verts(obj, frame):
    scene = bpy.context.scene
    scene.frame_set(int(frame))
    depsgraph = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    co = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    m = np.array(ev.matrix_world)
    co = co.reshape(-1, 3)
    return co @ m[:3, :3].T + m[:3, 3]


def frame_errors(obj, frames, target):
    """Max vertex distance (m) per frame. Blender's glTF importer may reorder vertices: each is matched to
    the target vertex whose whole trajectory is nearest, and the match must be one-to-one."""
    got = np.stack([evaluated_world_verts(obj, f) for f in frames], 1)  # (V,F,3)
    ref = np.asarray(target).transpose(1, 0, 2).reshape(len(got), -1)
    flat = got.reshape(len(got), -1)
    idx = np.empty(len(got), np.int64)
    for lo in range(0, len(got), 256):
        idx[lo : lo + 256] = ((flat[lo : lo + 256, None] - ref[None]) ** 2).sum(-1).argmin(1)
    assert len(np.unique(idx)) == len(idx), "the imported mesh does not hold every vertex once"
    return np.linalg.norm(got - ref[idx].reshape(got.shape), axis=-1).max(0)


def the_mesh():
    return next(o for o in bpy.context.scene.objects if o.type == "MESH")


def report(name, errors, path):
    print(
        f"{name}: max error {1000 * max(errors):.3f} mm over frames, file {path.name} {path.stat().st_size / 1e6:.2f} MB"
    )


def test_gltf_skinned(expected):
    path = FILES / "skinned" / "clip_mega_anim.glb"
    fresh_scene(float(expected["fps"]))
    bpy.ops.import_scene.gltf(filepath=str(path))
    errors = frame_errors(the_mesh(), expected["frames"], to_blender(expected["skinned"]))
    report("glTF skinned", errors, path)
    assert max(errors) < TOL


def test_gltf_morph_targets(expected):
    path = FILES / "morph" / "clip_mega_anim.glb"
    fresh_scene(float(expected["fps"]))
    bpy.ops.import_scene.gltf(filepath=str(path))
    errors = frame_errors(the_mesh(), expected["frames"], to_blender(expected["exact"]))
    report("glTF morph targets", errors, path)
    assert max(errors) < TOL


def test_bvh_joints(expected):
    path = FILES / "bvh" / "clip_mega_track3.bvh"
    fresh_scene(float(expected["fps"]))
    frames = expected["frames"]
    bpy.ops.import_anim.bvh(filepath=str(path), global_scale=0.01, frame_start=int(frames[0]), rotate_mode="NATIVE",
                            axis_forward="-Z", axis_up="Y", use_fps_scale=False)  # fmt: skip
    arm = next(o for o in bpy.context.scene.objects if o.type == "ARMATURE")
    names = [str(n) for n in expected["joint_names"]]
    target = to_blender(expected["joints"])
    errors = []
    for i, frame in enumerate(frames):
        bpy.context.scene.frame_set(int(frame))
        m = np.array(arm.matrix_world)
        heads = np.array([np.array(arm.pose.bones[n].head) for n in names])
        got = heads @ m[:3, :3].T + m[:3, 3]
        errors.append(np.linalg.norm(got - target[i], axis=-1).max())
    report("BVH joints", errors, path)
    assert max(errors) < TOL


def test_obj_with_pc2_mesh_cache(expected):
    path = FILES / "pc2" / "clip_mega_track3.pc2"
    fresh_scene(float(expected["fps"]))
    bpy.ops.wm.obj_import(filepath=str(path.with_suffix(".obj")))
    obj = the_mesh()
    mod = obj.modifiers.new("cache", "MESH_CACHE")
    mod.cache_format = "PC2"
    mod.filepath = str(path)
    frames = expected["frames"]
    mod.frame_start = float(frames[0])  # the PC2's first sample is the track's first frame
    target = to_blender(expected["exact"])  # the OBJ importer keeps the vertex order
    errors = [np.linalg.norm(evaluated_world_verts(obj, f) - target[i], axis=-1).max() for i, f in enumerate(frames)]
    report("OBJ + PC2 mesh cache", errors, path)
    assert max(errors) < TOL
