"""Score a `mega-rt video` results file against the ground truth of a `mega-rt synth` clip.

    figures = score_results("out.npz", "clip.npz")   # or: mega-rt score out.npz clip.npz

Each frame's detections are matched one-to-one to the ground-truth people by box IoU (greedy, IoU >=
`min_iou`), so any detector can be scored, not only `--boxes` from the ground truth (whose track ids
equal the people). People less than `min_visibility` visible are not expected; a detection matched to
one of them is neither a hit nor a false positive. Errors are in millimetres over the matched rows:

- pve_mm: vertex error after aligning the mesh centroids (the pose and shape; MEGA's canonical mesh
  is turned by the predicted rotation, so a wrong facing direction counts in full here);
- mpjpe_mm / pa_mpjpe_mm: joints through a regressor (J,6890) when given, centred / Procrustes aligned;
- translation_mm: distance between the predicted and true mesh centroids in the camera frame (depth
  from a person's pixel height, the part a single crop gets least right);
- recall / precision of the detections, and id_switches: times a person's matched track id changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ScoreError(ValueError):
    """A results or ground-truth file that cannot be scored; one line naming the file."""


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,4) x (M,4) xyxy boxes -> (N,M) intersection over union."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def match_boxes(pred: np.ndarray, truth: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one (pred, truth) index pairs, greedily by decreasing IoU (as COCO matches), each >= `min_iou`."""
    if len(pred) == 0 or len(truth) == 0:
        return []
    iou = box_iou(pred, truth)
    pairs, used_p, used_t = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < min_iou:
            break
        if r not in used_p and c not in used_t:
            pairs.append((r, c))
            used_p.add(r)
            used_t.add(c)
    return pairs


def _load(path: Path, keys: tuple[str, ...], what: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ScoreError(f"{path}: not a {what} (no {', '.join(missing)})")
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ScoreError(f"{path}: no such file") from None
    except ScoreError:
        raise
    except Exception as e:
        raise ScoreError(f"{path}: not a {what} npz ({e.__class__.__name__})") from None


def score_results(results_path, truth_path, regressor=None, min_iou: float = 0.5, min_visibility: float = 0.15) -> dict:
    """Figures of a results file (mega-rt video --results) against a synth clip's ground truth npz."""
    results_path, truth_path = Path(results_path), Path(truth_path)
    res = _load(results_path, ("frame", "track_id", "box_xyxy", "verts", "cam_t"), "mega-rt video results file")
    gt = _load(truth_path, ("verts_cam", "boxes_xyxy"), "mega-rt synth ground-truth file")
    frames, people = gt["boxes_xyxy"].shape[:2]
    _same_clip(res, gt, frames, results_path, truth_path)
    visibility = gt.get("visibility", np.ones((frames, people), np.float32))
    if len(res["frame"]) and int(res["frame"].max()) >= frames:
        raise ScoreError(
            f"{results_path}: has frame {int(res['frame'].max())} but {truth_path} only {frames} frames (results of another clip?)"
        )
    rows_of = {}
    for i, f in enumerate(res["frame"]):
        rows_of.setdefault(int(f), []).append(i)
    pred_rows, true_meshes, sums = [], [], {}
    hits = expected = false_pos = switches = 0
    last_id: dict[int, int] = {}
    for f in range(frames):
        rows = rows_of.get(f, [])
        seen = visibility[f] >= min_visibility
        expected += int(seen.sum())
        pairs = match_boxes(res["box_xyxy"][rows], gt["boxes_xyxy"][f], min_iou)
        matched_rows = {r for r, _ in pairs}
        false_pos += sum(1 for r in range(len(rows)) if r not in matched_rows)
        for r, k in pairs:
            if not seen[k]:
                continue
            hits += 1
            row = rows[r]
            pred_rows.append(res["verts"][row])
            true_meshes.append(gt["verts_cam"][f, k])
            if len(pred_rows) == 256:  # bounded memory on long clips
                _add_errors(sums, pred_rows, true_meshes, regressor)
            tid = int(res["track_id"][row])
            if k in last_id and tid != last_id[k]:
                switches += 1
            last_id[k] = tid
    _add_errors(sums, pred_rows, true_meshes, regressor)
    names = ("pve_mm", "translation_mm") + (("mpjpe_mm", "pa_mpjpe_mm") if regressor is not None else ())
    errors = {n: 1000 * sums[n] / hits if hits else float("nan") for n in names}
    out = {
        "frames": frames, "people_expected": expected, "people_matched": hits,
        "recall": hits / expected if expected else float("nan"),
        "precision": hits / (hits + false_pos) if hits + false_pos else float("nan"),
        "false_positives": false_pos, "id_switches": switches,
        **errors,
    }  # fmt: skip
    return out


def _same_clip(res: dict, gt: dict, frames: int, results_path: Path, truth_path: Path) -> None:
    """Refuse results of another clip: a frame size or frame count (read, not only written) that differs
    would score every person as missed, and the errors as NaN."""
    if "image_size_wh" in res and "image_size_wh" in gt:
        got, want = (tuple(int(v) for v in np.ravel(x[k])) for x, k in ((res, "image_size_wh"), (gt, "image_size_wh")))
        if got != want:
            raise ScoreError(
                f"{results_path}: frames of {got[0]}x{got[1]} but {truth_path} is {want[0]}x{want[1]} (results of another clip?)"
            )
    if "num_frames" in res:
        read = sum(int(res.get(k, 0)) for k in ("num_frames", "frames_skipped", "frames_dropped"))
        if read != frames:
            raise ScoreError(
                f"{results_path}: covers {read} frames but {truth_path} has {frames} (results of another clip, or a "
                "--max-frames run: score a run over the whole clip)"
            )


def _add_errors(sums: dict, pred: list, truth: list, regressor) -> None:
    """Add the summed per-person errors (m) of the meshes in `pred`/`truth` to `sums` and empty both
    lists; the metrics are `train.metrics`' (the protocol of `mega-rt eval`)."""
    import torch

    from train import metrics

    if not pred:
        return
    p = torch.from_numpy(np.stack(pred).astype(np.float32))
    t = torch.from_numpy(np.stack(truth).astype(np.float32))
    errs = {"pve_mm": metrics.pve(p, t), "translation_mm": (p.mean(1) - t.mean(1)).norm(dim=-1)}
    if regressor is not None:
        reg = torch.as_tensor(regressor, dtype=torch.float32)
        errs.update(mpjpe_mm=metrics.mpjpe(p, t, reg), pa_mpjpe_mm=metrics.pa_mpjpe(p, t, reg))
    for n, v in errs.items():
        sums[n] = sums.get(n, 0.0) + float(v.double().sum())
    pred.clear()
    truth.clear()
