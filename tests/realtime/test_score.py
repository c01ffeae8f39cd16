"""`mega-rt score`: a results file against a synth clip's ground truth (realtime/score.py)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from realtime.cli import main
from realtime.score import ScoreError, box_iou, match_boxes, score_results


def test_box_iou_and_greedy_matching_by_hand():
    a = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [100, 100, 110, 110]], np.float32)
    iou = box_iou(a, b)
    assert iou[0, 0] == pytest.approx(50 / 150) and iou[0, 1] == pytest.approx(1.0) and iou[1, 2] == 0
    assert match_boxes(a, b, 0.3) == [(0, 1)]  # the best pair first; box 1 overlaps nobody
    assert match_boxes(a, b, 1.01) == [] and match_boxes(a[:0], b, 0.5) == []


def _truth(tmp_path, frames=4, people=3):
    rng = np.random.default_rng(0)
    verts = rng.normal(0, 0.3, (frames, people, 6890, 3)).astype(np.float32) + np.array([0, 0, 5], np.float32)
    boxes = np.zeros((frames, people, 4), np.float32)
    for k in range(people):
        boxes[:, k] = [100 * k, 0, 100 * k + 60, 150]
    visibility = np.ones((frames, people), np.float32)
    visibility[:, people - 1] = 0.05 if people > 1 else 1.0  # the last of several is hidden: not expected
    path = tmp_path / "gt.npz"
    np.savez(path, verts_cam=verts, boxes_xyxy=boxes, visibility=visibility)
    return path, verts, boxes


def test_scores_a_results_file_by_hand(tmp_path):
    gt_path, verts, boxes = _truth(tmp_path)
    rows = []  # (frame, track, box, verts)
    for f in range(4):
        rows.append((f, 7, boxes[f, 0] + 2, verts[f, 0] + np.float32(0.1)))  # exact shape, 10 cm off in x/y/z
        if f != 1:  # person 1 missed once
            rows.append((f, 8 if f < 3 else 9, boxes[f, 1], verts[f, 1]))  # id changes at frame 3
        rows.append((f, 3, boxes[f, 2], verts[f, 2]))  # the hidden person: neither hit nor false positive
    rows.append((2, 5, np.array([500, 500, 560, 650], np.float32), verts[2, 0]))  # a false positive
    order = np.random.default_rng(1).permutation(len(rows))  # file order must not matter
    rows = [rows[i] for i in order]
    res_path = tmp_path / "res.npz"
    np.savez(
        res_path, frame=np.array([r[0] for r in rows], np.int32), track_id=np.array([r[1] for r in rows]),
        box_xyxy=np.stack([r[2] for r in rows]), verts=np.stack([r[3] for r in rows]).astype(np.float16),
        cam_t=np.zeros((len(rows), 3), np.float32),
    )  # fmt: skip
    out = score_results(res_path, gt_path)
    assert out["people_expected"] == 8 and out["people_matched"] == 7
    assert out["recall"] == pytest.approx(7 / 8) and out["false_positives"] == 1
    assert out["precision"] == pytest.approx(7 / 8) and out["id_switches"] == 1
    assert out["pve_mm"] < 1.0  # float16 storage only: the centred shapes are exact
    assert out["translation_mm"] == pytest.approx(4 / 7 * 100 * np.sqrt(3), rel=1e-3)


def test_cli_scores_and_rejects_bad_files(tmp_path, assets_dir):
    gt_path, verts, boxes = _truth(tmp_path, frames=2, people=1)
    res_path = tmp_path / "res.npz"
    np.savez(res_path, frame=np.array([0, 1], np.int32), track_id=np.array([1, 1]), box_xyxy=boxes[:, 0],
             verts=verts[:, 0].astype(np.float16), cam_t=np.zeros((2, 3), np.float32))  # fmt: skip
    result = CliRunner().invoke(main, ["score", str(res_path), str(gt_path), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert "pa_mpjpe_mm" in result.output and (tmp_path / "s.json").is_file()
    for args, message in (
        ([str(tmp_path / "nope.npz"), str(gt_path)], "no such file"),
        ([str(gt_path), str(gt_path)], "not a mega-rt video results file"),
        ([str(res_path), str(res_path)], "not a mega-rt synth ground-truth file"),
    ):
        result = CliRunner().invoke(main, ["score", *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    with pytest.raises(ScoreError, match="only 1 frames"):
        one = tmp_path / "one.npz"
        np.savez(one, verts_cam=verts[:1], boxes_xyxy=boxes[:1])
        score_results(res_path, one)
