"""`mega-rt export-anim`: the files of one results file (and its SMPL fit), written atomically beside it
or into a folder. One .glb for all chosen tracks; one .bvh, and one .pc2 + .obj, per track."""

from __future__ import annotations

from pathlib import Path

from realtime.anim.results import AnimError, Results, SmplFit
from realtime.anim.world import to_world

FORMATS = ("glb", "bvh", "pc2")


def _write(path: Path, data: bytes, check) -> Path:
    from train.io import atomic_write

    with atomic_write(path, lambda tmp: check(tmp.read_bytes())) as tmp:
        tmp.write_bytes(data)
    return path


def _check_glb(data: bytes) -> None:
    import pygltflib

    gltf = pygltflib.GLTF2.load_from_bytes(data)
    if len(gltf.binary_blob() or b"") < gltf.buffers[0].byteLength:
        raise OSError("the written .glb does not read back")


def _check_bvh(data: bytes) -> None:
    if not data.startswith(b"HIERARCHY") or b"MOTION" not in data:
        raise OSError("the written .bvh does not read back")


def output_paths(results: Results, fmt: str, tracks: list[int], out_dir: Path) -> list[Path]:
    stem = results.path.stem
    if fmt == "glb":
        return [out_dir / f"{stem}_anim.glb"]
    if fmt == "bvh":
        return [out_dir / f"{stem}_track{t}.bvh" for t in tracks]
    return [out_dir / f"{stem}_track{t}{ext}" for t in tracks for ext in (".pc2", ".obj")]


def choose_tracks(results: Results, wanted) -> list[int]:
    have = results.track_ids()
    if not wanted:
        return have
    missing = [t for t in wanted if t not in have]
    if missing:
        raise AnimError(
            f"{results.path}: no track {', '.join(map(str, missing))} (tracks: {', '.join(map(str, have)) or 'none'})"
        )
    return list(wanted)


def export_anim(
    results: Results, fmt: str, tracks: list[int], out_dir: Path, fit: SmplFit | None, warn=print
) -> list[Path]:
    from realtime.anim import bvh, glb, pc2
    from realtime.anim.skeleton import posed_skeleton

    if not tracks:
        raise AnimError(f"{results.path}: nobody in the results, nothing to export")
    paths = output_paths(results, fmt, tracks, out_dir)
    if fit is not None:
        missing = [t for t in tracks if t not in fit.track_ids()]
        if missing:
            raise AnimError(
                f"{fit.path}: no fit of track {', '.join(map(str, missing))}; run mega-rt fit {results.path} again"
            )
    if fmt == "bvh":
        if fit is None:
            raise AnimError(
                f"{results.path}: BVH needs SMPL parameters; run `mega-rt fit {results.path} --smpl-model SMPL_NEUTRAL.pkl` first"
            )
        names = glb.joint_names(len(fit.parents))
        for track, path in zip(tracks, paths):
            text = bvh.bvh_text(posed_skeleton(fit.track(track), fit.parents), results.fps, names)
            _write(path, text.encode(), _check_bvh)
        return paths
    if fmt == "pc2":
        for i, track in enumerate(tracks):
            rows = results.rows_of(track)
            samples = pc2.every_frame(to_world(results.verts(rows)), results.frame[rows])
            _write(paths[2 * i], pc2.pc2_bytes(samples, results.frame[rows][0]), pc2.read_pc2)
            _write(paths[2 * i + 1], pc2.obj_text(samples[0], results.faces).encode(), lambda d: None)
        return paths
    b = glb.new_builder()
    if fit is None:
        frames = sum(len(results.rows_of(t)) for t in tracks)
        size = glb.morph_bytes(frames, results.num_verts)
        warn(
            f"warning: no SMPL fit used ({fit_name(results.path)} is what mega-rt fit writes): writing a vertex animation, one morph target per frame "
            f"(~{size / 1e6:.1f} MB for {frames} meshes); `mega-rt fit` first gives a small skinned file"
        )
    for track in tracks:
        rows = results.rows_of(track)
        std = results.vertex_std(rows)
        colors = glb.std_rgb(std.mean(0)) if std is not None else None
        name = f"track_{track}"
        if fit is None:
            glb.add_morph_track(
                b, name, to_world(results.verts(rows)), results.frame[rows], results.faces, results.fps, colors
            )
        else:
            t = fit.track(track)
            weights = fit.arrays["skin_weights"]
            glb.add_skinned_track(
                b,
                name,
                posed_skeleton(t, fit.parents),
                t["rest_verts"],
                weights,
                fit.arrays["faces"],
                results.fps,
                colors,
            )
    _write(paths[0], b.glb(), _check_glb)
    return paths


def fit_name(results_path: Path) -> Path:
    from realtime.fit_smpl import smpl_results_name

    return smpl_results_name(results_path)


def find_fit(results_path: Path, smpl: str | None) -> SmplFit | None:
    """The SMPL fit given, else `<stem>_smpl.npz` beside the results when it exists."""
    if smpl:
        return SmplFit(smpl)
    default = fit_name(results_path)
    return SmplFit(default) if default.is_file() else None
