"""The Poser stage: canonical vertices -> rotated -> placed in the full image's camera frame.

As the official demo: the crop's weak-perspective camera becomes a full-image translation with
`cam_crop_to_full`, focal 1000/224 * max(W, H), principal point at the image centre. Everything stays
on the device, the focal length too: realtime/collect.py reads the batch back in one copy.
"""

from __future__ import annotations

from realtime.types import Crops, Meshes, MeshPred
from train.geometry import CROP_FOCAL, cam_crop_to_full, full_image_focal, rotate


def pose(pred: MeshPred, crops: Crops, crop_focal: float = CROP_FOCAL) -> Meshes:
    wh = crops.image_size_wh.to(pred.cam_crop.device)
    focal = full_image_focal(wh[None], crop_focal)[0]
    cam_t = cam_crop_to_full(pred.cam_crop, crops.box_center.to(wh.device), crops.box_size.to(wh.device), wh, focal)
    verts_cam = rotate(pred.verts_canonical, pred.rotmat) + cam_t[:, None]
    return Meshes(verts_cam, cam_t, pred.vertex_std, focal)
