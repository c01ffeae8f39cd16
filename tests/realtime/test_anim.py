"""Animation files (realtime/anim, `mega-rt export-anim`) read back: the glTF through pygltflib (and
trimesh) with the skinning evaluated here, BVH through a small parser, PC2 with numpy; and the GLB's
structure checked (accessor bounds, buffer lengths, alignment)."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from realtime.anim.world import axis_angle_to_matrix, to_world
from realtime.cli import main
from realtime.fit_smpl import BodyModel, FitConfig, fit_results, write_smpl_npz
from tests.realtime.smpl_fixtures import FPS, known_motion, smpl_model_file, write_results

FRAMES_A = np.arange(5)
FRAMES_B = np.array([1, 2, 4, 5])  # a gap at frame 3


@pytest.fixture(scope="module")
def clip(tmp_path_factory, assets_dir):
    """A two-person results file (stochastic: with vertex_std), its SMPL fit, and the model."""
    folder = tmp_path_factory.mktemp("anim")
    model = BodyModel(smpl_model_file(folder, assets_dir))
    a, b = known_motion(model, len(FRAMES_A), seed=5), known_motion(model, len(FRAMES_B), seed=6)
    verts = torch.cat([a["verts"], b["verts"]]).numpy()
    std = np.abs(np.random.default_rng(0).normal(0, 0.03, verts.shape[:2]))
    results = write_results(
        folder / "clip_mega.npz", verts, np.r_[FRAMES_A, FRAMES_B], np.r_[[0] * 5, [3] * 4], model.faces, vertex_std=std
    )
    fit = fit_results(results, model, FitConfig())
    write_smpl_npz(folder / "clip_mega_smpl.npz", fit)
    return dict(folder=folder, results=results, model=model, fit=fit, verts=verts, std=std)


def export(clip, fmt, *extra):
    out = clip["folder"] / f"out_{fmt}_{len(extra)}"
    r = CliRunner().invoke(main, ["export-anim", str(clip["results"]), "--format", fmt, "--out", str(out), *extra])
    assert r.exit_code == 0, r.output + r.stderr
    return out, r


def fitted_world_verts(clip, track):
    """The fitted SMPL meshes of one track in the world frame (the skinned file must reproduce them)."""
    f, m = clip["fit"], clip["model"]
    rows = f["track_id"] == track
    betas = torch.from_numpy(f["betas"][rows])
    with torch.no_grad():
        v, _ = m.forward(
            *(torch.from_numpy(f[k][rows]) for k in ("global_orient", "body_pose")),
            betas,
            torch.from_numpy(f["transl"][rows]),
        )
    return to_world(v.numpy()), f["frame"][rows]


# ---- glTF --------------------------------------------------------------------------------------------
def read_accessor(gltf, index):
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype = {5126: np.float32, 5123: np.uint16, 5125: np.uint32, 5121: np.uint8}[acc.componentType]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc.type]
    data = np.frombuffer(gltf.binary_blob(), dtype, acc.count * width, view.byteOffset + (acc.byteOffset or 0))
    return data.reshape(acc.count, width) if width > 1 else data


def check_well_formed(gltf):
    blob = gltf.binary_blob()
    assert len(gltf.buffers) == 1 and gltf.buffers[0].byteLength == len(blob)
    for view in gltf.bufferViews:
        assert view.byteOffset % 4 == 0 and view.byteOffset + view.byteLength <= gltf.buffers[0].byteLength
    for i, acc in enumerate(gltf.accessors):
        data = read_accessor(gltf, i).reshape(acc.count, -1)
        assert data.nbytes <= gltf.bufferViews[acc.bufferView].byteLength
        if acc.min:  # pygltflib reads an absent min/max as []
            np.testing.assert_allclose(acc.min, data.min(0), rtol=0, atol=1e-6)
            np.testing.assert_allclose(acc.max, data.max(0), rtol=0, atol=1e-6)
    for mesh in gltf.meshes:
        for prim in mesh.primitives:
            pos = gltf.accessors[prim.attributes.POSITION]
            assert pos.min and pos.max  # required by the spec
            assert read_accessor(gltf, prim.indices).max() < pos.count
    for anim in gltf.animations:
        for s in anim.samplers:
            assert gltf.accessors[s.input].min


def node_matrix(node, rotation=None, translation=None):
    q = np.asarray(rotation if rotation is not None else (node.rotation or [0, 0, 0, 1]), np.float64)
    x, y, z, w = q / np.linalg.norm(q)
    m = np.eye(4)
    m[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    m[:3, 3] = translation if translation is not None else (node.translation or [0, 0, 0])
    return m


def skinned_vertices(gltf, animation, key):
    """Evaluate one skinned mesh at the key-th keyframe: node TRS from the animation, glTF skinning."""
    values = {}
    for ch in animation.channels:
        s = animation.samplers[ch.sampler]
        values[(ch.target.node, ch.target.path)] = read_accessor(gltf, s.output)[key]
    parent = {c: i for i, n in enumerate(gltf.nodes) for c in (n.children or [])}
    world = {}

    def global_of(i):
        if i not in world:
            n = gltf.nodes[i]
            local = node_matrix(n, values.get((i, "rotation")), values.get((i, "translation")))
            world[i] = (global_of(parent[i]) if i in parent else np.eye(4)) @ local
        return world[i]

    mesh_node = next(
        n
        for n in gltf.nodes
        if n.skin is not None
        and values
        and n.skin == gltf.skins.index(next(s for s in gltf.skins if s.name == animation.name))
    )
    skin = gltf.skins[mesh_node.skin]
    ibm = read_accessor(gltf, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    joint_mats = np.stack([global_of(j) for j in skin.joints]) @ ibm
    prim = gltf.meshes[mesh_node.mesh].primitives[0]
    pos = read_accessor(gltf, prim.attributes.POSITION).astype(np.float64)
    joints = read_accessor(gltf, prim.attributes.JOINTS_0).astype(np.int64)
    weights = read_accessor(gltf, prim.attributes.WEIGHTS_0).astype(np.float64)
    skin_mats = np.einsum("vk,vkab->vab", weights, joint_mats[joints])
    return np.einsum("vab,vb->va", skin_mats[:, :3, :3], pos) + skin_mats[:, :3, 3]


def test_skinned_glb_reproduces_the_fitted_meshes(clip):
    import pygltflib

    out, r = export(clip, "glb")
    assert "warning" not in r.stderr
    gltf = pygltflib.GLTF2.load(out / "clip_mega_anim.glb")
    check_well_formed(gltf)
    assert [a.name for a in gltf.animations] == ["track_0", "track_3"] and len(gltf.skins) == 2
    for anim in gltf.animations:
        track = int(anim.name.split("_")[1])
        expected, frames = fitted_world_verts(clip, track)
        times = read_accessor(gltf, anim.samplers[0].input)
        np.testing.assert_allclose(times, frames / FPS, atol=1e-6)
        for key in (0, len(frames) // 2, len(frames) - 1):
            got = skinned_vertices(gltf, anim, key)
            assert np.abs(got - expected[key]).max() < 1e-4
    prim = gltf.meshes[0].primitives[0]
    colors = read_accessor(gltf, prim.attributes.COLOR_0)
    assert colors.shape == (6890, 3) and colors.min() >= 0 and colors.max() <= 1
    sure, unsure = np.argmin(clip["std"][:5].mean(0)), np.argmax(clip["std"][:5].mean(0))
    assert colors[sure, 2] > colors[sure, 0] and colors[unsure, 0] > colors[unsure, 2]  # blue sure, red unsure


def test_morph_glb_without_fit_holds_every_mesh(clip):
    import pygltflib
    import trimesh

    out, r = export(clip, "glb", "--track", "3", "--no-smpl")
    assert "warning: no SMPL fit" in r.stderr and "MB" in r.stderr
    path = out / "clip_mega_anim.glb"
    gltf = pygltflib.GLTF2.load(path)
    check_well_formed(gltf)
    prim = gltf.meshes[0].primitives[0]
    base = read_accessor(gltf, prim.attributes.POSITION)
    targets = np.stack([read_accessor(gltf, t["POSITION"]) for t in prim.targets])
    sampler = gltf.animations[0].samplers[0]
    weights = read_accessor(gltf, sampler.output).reshape(len(FRAMES_B), len(targets))
    np.testing.assert_allclose(read_accessor(gltf, sampler.input), FRAMES_B / FPS, atol=1e-6)
    expected = to_world(clip["verts"][5:].astype(np.float16).astype(np.float32))
    for key in range(len(FRAMES_B)):
        assert np.abs(base + np.einsum("t,tvc->vc", weights[key], targets) - expected[key]).max() < 1e-4
    scene = trimesh.load(path, file_type="glb", process=False)
    mesh = next(iter(scene.geometry.values()))
    assert np.abs(np.asarray(mesh.vertices) - expected[0]).max() < 1e-4 and len(mesh.faces) == 13776


# ---- BVH ---------------------------------------------------------------------------------------------
def parse_bvh(text):
    """-> names, parents, offsets (J,3), channels per joint, frame time, motion (F, C)."""
    names, parents, offsets, channels, stack = [], [], [], [], []
    lines = iter(text.splitlines())
    for line in lines:
        tok = line.split()
        if not tok:
            continue
        if tok[0] in ("ROOT", "JOINT"):
            names.append(tok[1])
            parents.append(stack[-1] if stack else -1)
        elif tok[0] == "End":
            next(lines), next(lines), next(lines)  # { OFFSET }
        elif tok[0] == "{":
            stack.append(len(names) - 1)
        elif tok[0] == "}":
            stack.pop()
        elif tok[0] == "OFFSET":
            offsets.append([float(v) for v in tok[1:]])
        elif tok[0] == "CHANNELS":
            channels.append(tok[2:])
        elif tok[0] == "MOTION":
            break
    count = int(next(lines).split()[1])
    frame_time = float(next(lines).split()[2])
    motion = np.array([[float(v) for v in next(lines).split()] for _ in range(count)])
    return names, parents, np.array(offsets), channels, frame_time, motion


def bvh_joint_positions(names, parents, offsets, channels, row):
    axis = {"X": 0, "Y": 1, "Z": 2}
    glob_r, glob_p, col = {}, {}, 0
    for j in range(len(names)):
        rot, pos = np.eye(3), offsets[j].copy()
        for ch in channels[j]:
            v = row[col]
            col += 1
            if ch.endswith("position"):
                pos[axis[ch[0]]] += v
            else:
                aa = np.zeros(3)
                aa[axis[ch[0]]] = np.radians(v)
                rot = rot @ axis_angle_to_matrix(aa)
        p = parents[j]
        glob_r[j] = rot if p < 0 else glob_r[p] @ rot
        glob_p[j] = pos if p < 0 else glob_p[p] + glob_r[p] @ pos
    return np.stack([glob_p[j] for j in range(len(names))])


def test_bvh_parses_back_to_the_fitted_joints(clip):
    from train.synthetic.body import JOINT_NAMES

    out, _ = export(clip, "bvh")
    text = (out / "clip_mega_track3.bvh").read_text()
    names, parents, offsets, channels, frame_time, motion = parse_bvh(text)
    assert sorted(names) == sorted(JOINT_NAMES) and abs(frame_time - 1 / FPS) < 1e-7
    assert len(motion) == FRAMES_B[-1] - FRAMES_B[0] + 1  # evenly spaced: the gap frame repeats frame 2
    f = clip["fit"]
    rows = np.flatnonzero(f["track_id"] == 3)
    order = [JOINT_NAMES.index(n) for n in names]
    for row, frame in zip(rows, f["frame"][rows]):
        got = bvh_joint_positions(names, parents, offsets, channels, motion[frame - FRAMES_B[0]]) / 100.0  # cm
        assert np.abs(got - to_world(f["joints"][row][order])).max() < 1e-4
    np.testing.assert_allclose(motion[3 - FRAMES_B[0]], motion[2 - FRAMES_B[0]])


def test_bvh_needs_the_fit(clip):
    r = CliRunner().invoke(
        main, ["export-anim", str(clip["results"]), "--format", "bvh", "--no-smpl", "--out", str(clip["folder"] / "x")]
    )
    assert r.exit_code == 2 and "mega-rt fit" in r.output and "Traceback" not in r.output


# ---- PC2 ---------------------------------------------------------------------------------------------
def test_pc2_holds_the_exact_vertices_and_the_obj_the_first(clip):
    import trimesh

    out, _ = export(clip, "pc2", "--track", "3")
    data = (out / "clip_mega_track3.pc2").read_bytes()
    magic, version, points, start, rate, count = struct.unpack_from("<12siiffi", data)
    assert (magic, version, points, start, rate, count) == (b"POINTCACHE2\0", 1, 6890, 1.0, 1.0, 5)
    samples = np.frombuffer(data, "<f4", offset=32).reshape(count, points, 3)
    expected = to_world(clip["verts"][5:].astype(np.float16).astype(np.float32))
    for i, frame in enumerate(FRAMES_B):
        np.testing.assert_array_equal(samples[frame - 1], expected[i])
    np.testing.assert_allclose(samples[2], (expected[1] + expected[2]) / 2, atol=1e-6)  # frame 3: between 2 and 4
    obj = trimesh.load(out / "clip_mega_track3.obj", process=False)
    assert np.abs(np.asarray(obj.vertices) - expected[0]).max() < 1e-5 and len(obj.faces) == 13776


def test_export_refuses_unknown_tracks_and_foreign_files(clip, tmp_path):
    r = CliRunner().invoke(main, ["export-anim", str(clip["results"]), "--format", "pc2", "--track", "9"])
    assert r.exit_code == 2 and "no track 9" in r.output
    bad = tmp_path / "x.npz"
    np.savez(bad, a=np.zeros(2))
    r = CliRunner().invoke(main, ["export-anim", str(bad), "--format", "glb"])
    assert r.exit_code == 2 and re.search("not a mega-rt results file", r.output)
