"""glTF 2.0 binary (.glb) through pygltflib: one mesh per track and one animation per track.

With an SMPL fit the mesh is skinned: the SMPL skeleton (skeleton.py) as joint nodes, the track's shaped
rest body as bind pose, node rotations and root translation keyed at every frame of the track. Without
one it is a vertex animation: one morph target per frame and a weights track that selects it, so the file
grows by 83 kB per frame and person. Per-vertex uncertainty (stochastic results) becomes COLOR_0: the
overlay's colour scale (blue sure, red unsure, 0-10 cm) of the track's mean spread. Keys sit at time
frame / fps (the source's frame numbers); between the frames a track was seen, values are interpolated.
"""

from __future__ import annotations

import numpy as np

from realtime.anim.skeleton import PosedSkeleton
from realtime.anim.world import matrix_to_quaternion_xyzw

MORPH_WARN_BYTES = 50 << 20

_COMPONENT = {
    np.dtype(np.float32): 5126,
    np.dtype(np.uint16): 5123,
    np.dtype(np.uint32): 5125,
    np.dtype(np.uint8): 5121,
}
_TYPE = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}


class _Builder:
    """The one binary buffer of a .glb and the accessors into it (4-byte aligned, min/max where required)."""

    def __init__(self):
        import pygltflib

        self.g = pygltflib
        self.gltf = pygltflib.GLTF2(asset=pygltflib.Asset(version="2.0", generator="mega-rt"))
        self.gltf.scenes = [pygltflib.Scene(nodes=[])]
        self.gltf.scene = 0
        self.chunks: list[bytes] = []
        self.size = 0

    def accessor(self, array: np.ndarray, target: int | None = None, bounds: bool = False) -> int:
        array = np.ascontiguousarray(array)
        width = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
        data = array.tobytes()
        self.gltf.bufferViews.append(
            self.g.BufferView(buffer=0, byteOffset=self.size, byteLength=len(data), target=target)
        )
        pad = (-len(data)) % 4
        self.chunks.append(data + b"\0" * pad)
        self.size += len(data) + pad
        flat = array.reshape(len(array), width)
        acc = self.g.Accessor(
            bufferView=len(self.gltf.bufferViews) - 1, componentType=_COMPONENT[array.dtype], count=len(array), type=_TYPE[width],
            min=flat.min(0).tolist() if bounds else None, max=flat.max(0).tolist() if bounds else None,
        )  # fmt: skip
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def node(self, **kw) -> int:
        self.gltf.nodes.append(self.g.Node(**kw))
        return len(self.gltf.nodes) - 1

    def mesh(self, positions, faces, colors=None, targets=None, skinned=None) -> int:
        g = self.g
        attrs = g.Attributes(POSITION=self.accessor(positions.astype(np.float32), g.ARRAY_BUFFER, bounds=True))
        if colors is not None:
            attrs.COLOR_0 = self.accessor(colors.astype(np.float32), g.ARRAY_BUFFER)
        if skinned is not None:
            joints, weights = skinned
            attrs.JOINTS_0 = self.accessor(joints, g.ARRAY_BUFFER)
            attrs.WEIGHTS_0 = self.accessor(weights, g.ARRAY_BUFFER)
        indices = self.accessor(faces.astype(np.uint32).reshape(-1), g.ELEMENT_ARRAY_BUFFER, bounds=True)
        prim = g.Primitive(attributes=attrs, indices=indices, mode=4)
        if targets is not None:
            prim.targets = [{"POSITION": self.accessor(t, g.ARRAY_BUFFER, bounds=True)} for t in targets]
        self.gltf.meshes.append(
            g.Mesh(primitives=[prim], weights=[0.0] * len(targets) if targets is not None else None)
        )
        return len(self.gltf.meshes) - 1

    def glb(self) -> bytes:
        blob = b"".join(self.chunks)
        self.gltf.buffers = [self.g.Buffer(byteLength=len(blob))]
        self.gltf.set_binary_blob(blob)
        return b"".join(self.gltf.save_to_bytes())


def _top4(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """glTF's four influences per vertex: the largest weights, renormalised (SMPL has at most 4 nonzero)."""
    idx = np.argsort(-weights, 1)[:, :4]
    w = np.take_along_axis(weights, idx, 1).astype(np.float32)
    w /= w.sum(1, keepdims=True)
    return idx.astype(np.uint16), w


def std_rgb(vertex_std: np.ndarray) -> np.ndarray:
    """(V,) metres -> (V,3) linear RGB in [0,1] on the overlay's scale."""
    from realtime.overlay import std_colors

    return std_colors(vertex_std[None])[0][:, ::-1].copy()


def _times(frames: np.ndarray, fps: float) -> np.ndarray:
    return (np.asarray(frames, np.float64) / fps).astype(np.float32)


def add_skinned_track(b: _Builder, name: str, skel: PosedSkeleton, rest_verts, weights, faces, fps, colors=None):
    g = b.g
    joints = len(skel.parents)
    first = len(b.gltf.nodes)
    names = joint_names(joints)
    for k in range(joints):
        children = [first + c for c in range(joints) if skel.parents[c] == k]
        b.node(name=f"{name}_{names[k]}", translation=skel.offsets[k].tolist(), children=children or None)
    ibm = np.tile(np.eye(4, dtype=np.float32), (joints, 1, 1))
    ibm[:, :3, 3] = -skel.rest_joints  # bind pose: joint k at its rest position, unrotated
    ibm = np.ascontiguousarray(ibm.transpose(0, 2, 1)).reshape(joints, 16)  # glTF matrices are column-major
    b.gltf.skins.append(
        g.Skin(
            name=name, joints=list(range(first, first + joints)), skeleton=first, inverseBindMatrices=b.accessor(ibm)
        )
    )
    mesh = b.mesh(rest_verts, faces, colors, skinned=_top4(weights))
    mesh_node = b.node(name=f"{name}_body", mesh=mesh, skin=len(b.gltf.skins) - 1)
    b.gltf.scenes[0].nodes += [first, mesh_node]
    time = b.accessor(_times(skel.frame, fps), bounds=True)
    samplers, channels = [], []
    quats = matrix_to_quaternion_xyzw(skel.local_rot).astype(np.float32)  # (T,J,4)
    for k in range(joints):
        samplers.append(
            g.AnimationSampler(input=time, output=b.accessor(np.ascontiguousarray(quats[:, k])), interpolation="LINEAR")
        )
        channels.append(
            g.AnimationChannel(
                sampler=len(samplers) - 1, target=g.AnimationChannelTarget(node=first + k, path="rotation")
            )
        )
    samplers.append(
        g.AnimationSampler(input=time, output=b.accessor(skel.root_pos.astype(np.float32)), interpolation="LINEAR")
    )
    channels.append(
        g.AnimationChannel(sampler=len(samplers) - 1, target=g.AnimationChannelTarget(node=first, path="translation"))
    )
    b.gltf.animations.append(g.Animation(name=name, samplers=samplers, channels=channels))


def add_morph_track(b: _Builder, name: str, verts_world: np.ndarray, frames, faces, fps, colors=None):
    g = b.g
    base = verts_world[0]
    targets = [np.ascontiguousarray(v - base) for v in verts_world]
    mesh = b.mesh(base, faces, colors, targets=targets)
    node = b.node(name=f"{name}_body", mesh=mesh)
    b.gltf.scenes[0].nodes.append(node)
    count = len(verts_world)
    weights = np.eye(count, dtype=np.float32).reshape(-1)  # at key i, target i alone
    sampler = g.AnimationSampler(
        input=b.accessor(_times(frames, fps), bounds=True), output=b.accessor(weights), interpolation="LINEAR"
    )
    channel = g.AnimationChannel(sampler=0, target=g.AnimationChannelTarget(node=node, path="weights"))
    b.gltf.animations.append(g.Animation(name=name, samplers=[sampler], channels=[channel]))


def morph_bytes(frames: int, verts: int) -> int:
    return frames * verts * 12 + frames * frames * 4


def joint_names(count: int) -> list[str]:
    from train.synthetic.body import JOINT_NAMES

    return [JOINT_NAMES[k] if k < len(JOINT_NAMES) else f"joint_{k}" for k in range(count)]


def new_builder() -> _Builder:
    return _Builder()
