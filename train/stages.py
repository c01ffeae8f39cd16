"""The three training stages as data: what is trained, on what, with which loss (train/loop.py runs them).

- tokenizer: the Mesh-VQ-VAE on canonical meshes. Loss = mean per-vertex distance + commitment; the
  codebook moves by EMA over the whole global batch (gathered from every process) once per optimiser
  step, and codes unused for a while are restarted on recent latents.
- pretrain: masked token modelling (the official VQMAE) on meshes tokenized by a trained tokenizer;
  cross-entropy on the masked tokens, M = floor(N cos(pi tau / 2)) masked per sample (train/masking.py).
- hmr: MEGA from images, starting from the pre-trained token model: the same masking on the mesh
  tokens with the image tokens always visible, token cross-entropy; plus the rotation (Frobenius
  distance) and camera (L1 on the ground-truth joints, turned by the predicted rotation and projected
  with the predicted weak-perspective camera) losses of the rotation/camera head. The official code
  projects the joints of the decoded *predicted* mesh instead (without gradient to the tokens); the
  ground-truth joints give the head the same supervision whatever the token predictions are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from train import losses
from train.config import ConfigError, MegaConfig, MeshVQVAEConfig, TrainConfig, builtin_config, load_config
from train.distributed import DistInfo, all_gather_cat
from train.geometry import rot6d_to_matrix, yaw_of_rotation
from train.masking import training_mask


@dataclass
class Stage:
    name: str
    module: nn.Module  # what the optimiser trains and DDP wraps; `loss` calls it
    dataset: torch.utils.data.Dataset  # dataset[sample numbers] -> batch dict (train/data/batches.py)
    loss: Callable[[nn.Module, dict], dict[str, torch.Tensor]]  # named terms, "loss" = their weighted sum
    param_groups: list[dict]  # AdamW groups; "lr_scale" multiplies the base lr
    export: Callable[[], tuple[nn.Module, object]]  # (the artefact, its config) saved as final.pt
    train_mode: bool = True  # module.train() during training
    after_step: Callable[[int], dict[str, float]] | None = None  # work once per optimiser step
    frozen: list[nn.Module] = field(default_factory=list)  # helpers to move to the device (tokenizer)


def named_config(ref: str, cls):
    """A shipped config name (configs/<ref>.yaml) or a YAML path."""
    if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
        return load_config(ref, cls)
    from train.config import CONFIG_DIR

    if not (CONFIG_DIR / f"{ref}.yaml").is_file():
        raise ConfigError(f"{ref!r}: neither a shipped config (configs/{ref}.yaml) nor a YAML file")
    return builtin_config(ref, cls)


# ---- data -----------------------------------------------------------------------------------------
def mesh_dataset(cfg: TrainConfig):
    from train.data.batches import MeshBatches
    from train.data.meshes import AmassMeshes, SyntheticMeshes
    from train.data.smpl import SmplBody

    sources = []
    if cfg.synthetic_meshes > 0:
        sources.append(SyntheticMeshes(cfg.synthetic_meshes, cfg.seed))
    if cfg.amass_dir:
        sources.append(AmassMeshes(cfg.amass_dir, SmplBody(cfg.smpl_model), cfg.amass_stride))
    if not sources:
        raise ConfigError(f"stage {cfg.stage} has no meshes: set synthetic_meshes > 0 and/or amass_dir (+ smpl_model)")
    if cfg.mix_ratios and len(cfg.mix_ratios) != len(sources):
        raise ConfigError(
            f"mix_ratios needs one share per mesh source ({len(sources)}: synthetic, amass), got {len(cfg.mix_ratios)}"
        )
    return MeshBatches(sources, cfg.mix_ratios, cfg.seed)


def hmr_dataset(cfg: TrainConfig, model_cfg: MegaConfig, backbone, augment: bool = True, crop_dirs=None, hmr_npz=None,
                image_dirs=None, sequential: bool = False):  # fmt: skip
    """The HMR crops of `cfg` (or of the given sources); `sequential` reads every sample once, in order."""
    from train.data.batches import HmrBatches
    from train.data.crops import CropShards
    from train.data.hmr_npz import HmrAnnotations
    from train.data.joints import synthetic_joint_regressor
    from train.data.smpl import SmplBody
    from train.synthetic import body as body_lib

    crop_dirs = cfg.crop_dirs if crop_dirs is None else crop_dirs
    hmr_npz = cfg.hmr_npz if hmr_npz is None else hmr_npz
    image_dirs = cfg.image_dirs if image_dirs is None else image_dirs
    if not crop_dirs and not hmr_npz:
        raise ConfigError(
            f"stage {cfg.stage} has no images: set crop_dirs (mega-rt synth --dataset) and/or hmr_npz + image_dirs"
        )
    regressor = synthetic_joint_regressor().numpy()
    sources = [CropShards(d, regressor) for d in crop_dirs]
    if hmr_npz:
        smpl = SmplBody(cfg.smpl_model)
        sources += [HmrAnnotations(p, d, smpl) for p, d in zip(hmr_npz, image_dirs)]
    rig = body_lib.load_rig()
    augment_args = None
    if augment:
        augment_args = dict(scale=cfg.aug_scale, rotation_deg=cfg.aug_rotation_deg, rotation_prob=cfg.aug_rotation_prob,
                            flip_prob=cfg.aug_flip_prob, color=cfg.aug_color)  # fmt: skip
    return HmrBatches(
        sources, cfg.mix_ratios, cfg.seed, (model_cfg.input_height, model_cfg.input_width), backbone.mean, backbone.std,
        rig.symmetry, np.asarray(body_lib.JOINT_MIRROR), augment_args, model_cfg.seq_length, sequential,
    )  # fmt: skip


# ---- shared pieces -------------------------------------------------------------------------------
class TokenTargets:
    """Target tokens of ground-truth meshes from the frozen tokenizer, memoised per (source, index, flip):
    a mesh's tokens never change, and tokenizing costs more than a small transformer's step."""

    def __init__(self, tokenizer: nn.Module):
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self._memo: dict[tuple[int, int, int], torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, verts: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        keys_list = [tuple(k) for k in keys.tolist()]
        todo = [i for i, k in enumerate(keys_list) if k not in self._memo]
        if todo:
            tokens = self.tokenizer.encode(verts[todo].float())
            for i, t in zip(todo, tokens.cpu()):
                self._memo[keys_list[i]] = t
        return torch.stack([self._memo[k] for k in keys_list]).to(verts.device)


def _load_tokenizer(cfg: TrainConfig):
    from train.checkpoint import load_mesh_vqvae

    if not cfg.tokenizer_weights:
        raise ConfigError(f"stage {cfg.stage} needs tokenizer_weights (the final.pt of a tokenizer run)")
    return load_mesh_vqvae(cfg.tokenizer_weights)[0]


def _masked_inputs(
    tokens: torch.Tensor, noise: torch.Tensor, full_mask_prob: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    from train.sampling import MASKED

    masked = training_mask(noise, full_mask_prob)
    return torch.where(masked, torch.full_like(tokens, MASKED), tokens), masked


def _token_accuracy(logits: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    hit = (logits.argmax(-1) == target) & masked
    return hit.sum() / masked.sum().clamp(min=1)


# ---- tokenizer -----------------------------------------------------------------------------------
def _continue_tokenizer(model: nn.Module, tok_cfg: MeshVQVAEConfig, path: str) -> None:
    """Start from a finished tokenizer run (weights, codebook and EMA statistics): a second cosine
    cycle on the same architecture. The architecture must be the one this run names."""
    from train.checkpoint import CheckpointError, copy_matching, load_mesh_vqvae

    loaded, loaded_cfg = load_mesh_vqvae(path)
    if loaded_cfg != tok_cfg:
        raise CheckpointError(
            f"{path}: a tokenizer of config {loaded_cfg.name}, but this run trains {tok_cfg.name}; set tokenizer_config to match"
        )
    copy_matching(
        model.state_dict(),
        loaded.state_dict(),
        path,
        "does not fit this tokenizer run",
        "set tokenizer_config to match",
    )


def tokenizer_stage(cfg: TrainConfig, info: DistInfo) -> Stage:
    from train.model.mesh_vqvae import MeshVQVAE

    tok_cfg = named_config(cfg.tokenizer_config, MeshVQVAEConfig)
    model = MeshVQVAE.from_assets(tok_cfg)
    if cfg.init_weights:
        _continue_tokenizer(model, tok_cfg, cfg.init_weights)
    recent: list[tuple[torch.Tensor, torch.Tensor]] = []  # (latents, tokens) of this step's micro-batches

    def loss(module, batch):
        verts = batch["verts_canonical"]
        out = module(verts)
        recent.append((out["latent"].detach().flatten(0, 1), out["tokens"].flatten()))
        rec = losses.vertex_distance(out["verts"], verts)
        return {
            "loss": cfg.vertex_loss_weight * rec + out["commitment_loss"],
            "vertices": rec.detach(),
            "commitment": out["commitment_loss"].detach(),
            "perplexity": out["perplexity"].detach(),
        }

    def after_step(step: int) -> dict[str, float]:
        # The official model takes the EMA step inside forward, on one process's batch. Here every
        # process applies the same step to the latents of the whole global batch, so codebooks agree.
        latents = all_gather_cat(torch.cat([r[0] for r in recent]), info)
        tokens = all_gather_cat(torch.cat([r[1] for r in recent]), info)
        recent.clear()
        model.vq_vae.ema_update(latents, tokens)
        restarted = 0
        # step 0 included: the first batch's latents then seed every unused code (data-dependent init)
        if cfg.dead_code_every and step % cfg.dead_code_every == 0:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            restarted = model.restart_dead_codes(latents, cfg.dead_code_threshold, gen)
        return {"dead_codes_restarted": float(restarted)}

    return Stage(
        name="tokenizer", module=model, dataset=mesh_dataset(cfg), loss=loss,
        param_groups=[{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}],
        export=lambda: (model, tok_cfg),
        # no dropout or batch norm: eval mode only stops forward's own (per-process) EMA step
        train_mode=False, after_step=after_step,
    )  # fmt: skip


# ---- backbone ------------------------------------------------------------------------------------
class HeatmapForward(nn.Module):
    """The backbone's own pose network: HRNet's 1/4 branch through `final_layer` -> joint heatmaps;
    with `rotcam`, also MEGA's rotation/camera head on the backbone's MEGA features (one trunk pass);
    with `yaw_head`, also yaw-bin logits from the pooled MEGA features (train-only, never exported)."""

    def __init__(
        self, backbone: nn.Module, rotcam: dict[str, nn.Module] | None = None, yaw_head: nn.Module | None = None
    ):
        super().__init__()
        self.backbone = backbone
        self.has_rotcam = rotcam is not None
        for name, module in (rotcam or {}).items():  # the attribute names MEGA's decoder uses
            setattr(self, name, module)
        self.yaw_head = yaw_head

    def forward(self, images: torch.Tensor):
        from train.model.mega import rotcam_forward

        xs = self.backbone.branches(images)
        heatmaps = self.backbone.final_layer(xs[0])
        if not self.has_rotcam and self.yaw_head is None:
            return heatmaps, None, None, None
        features = self.backbone.features_from_branches(xs)
        rot6d, cam = rotcam_forward(self, features) if self.has_rotcam else (None, None)
        yaw_logits = self.yaw_head(features.mean(dim=(2, 3))) if self.yaw_head is not None else None
        return heatmaps, rot6d, cam, yaw_logits

    def exported(self) -> nn.Module:
        """What `final.pt` holds: the backbone, or with the rotation/camera head the backbone and the
        head under MEGA's decoder names (`load_backbone_weights`); the yaw head is left behind."""
        if not self.has_rotcam:
            return self.backbone
        return HeatmapForward(
            self.backbone, {n: getattr(self, n) for n in ("rotcam_head", "rot_predictor", "cam_predictor")}
        )


def yaw_head(cfg: TrainConfig, model_cfg: MegaConfig) -> nn.Module | None:
    """The train-only yaw classifier of `yaw_bins` (one linear layer on the pooled MEGA features, the
    input MEGA's rotation head gets), or None when it is off."""
    return nn.Linear(model_cfg.cond_dim, cfg.yaw_bins) if cfg.yaw_bins else None


def yaw_terms(yaw_logits: torch.Tensor, rotmat: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The yaw-bin loss and what to log of it: the loss and the error of the decoded yaw (degrees)."""
    yaw = yaw_of_rotation(rotmat)
    term = losses.yaw_bin_loss(yaw_logits, yaw)
    return term, {
        "yaw": term.detach(),
        "yaw_deg": losses.angle_error_deg(losses.yaw_from_logits(yaw_logits.detach()), yaw),
    }


def _peak_distances(heatmaps: torch.Tensor, joints2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,J) distances in heatmap pixels from each map's argmax to its keypoint, and (B,J) weights:
    the keypoint's label weight where it lies inside the crop, else 0."""
    b, j, h, w = heatmaps.shape
    flat = heatmaps.detach().float().flatten(2).argmax(-1)
    peak = torch.stack([flat % w, flat // w], -1).float()
    u = (joints2d[..., 0] + 1) * (w / 2) - 0.5
    v = (joints2d[..., 1] + 1) * (h / 2) - 0.5
    weight = joints2d[..., 2] * (joints2d[..., :2].abs() <= 1).all(-1)
    return (peak - torch.stack([u, v], -1)).norm(dim=-1), weight


def heatmap_joint_error(heatmaps: torch.Tensor, joints2d: torch.Tensor) -> torch.Tensor:
    """Mean distance, in heatmap pixels, between each labelled in-crop joint and its map's argmax."""
    dist, weight = _peak_distances(heatmaps, joints2d)
    return (dist * weight).sum() / weight.sum().clamp(min=1e-8)


def heatmap_side_swaps(
    heatmaps: torch.Tensor, joints2d: torch.Tensor, mirror: Sequence[int], min_joints: int = 3
) -> torch.Tensor:
    """Share of crops whose left/right joint maps fit the mirrored labels better than the true ones.

    A network that cannot see which way a body faces puts a joint and its mirror partner on either
    side at random: ~0.5, however small the joint error gets. Counted over the crops with at least
    `min_joints` side joints labelled (with their partners) inside the crop; NaN when there are none.
    """
    mirror = torch.as_tensor(list(mirror), device=heatmaps.device)
    side = torch.nonzero(mirror != torch.arange(len(mirror), device=mirror.device))[:, 0]
    dist, weight = _peak_distances(heatmaps, joints2d)
    swapped_dist, _ = _peak_distances(heatmaps, joints2d[:, mirror])
    use = ((weight[:, side] > 0) & (weight[:, mirror[side]] > 0)).float()
    count = use.sum(1)
    as_labelled = (dist[:, side] * use).sum(1)
    as_mirrored = (swapped_dist[:, side] * use).sum(1)
    judged = count >= min_joints
    if not bool(judged.any()):
        return torch.tensor(float("nan"))
    return (as_mirrored[judged] < as_labelled[judged]).float().mean()


def backbone_stage(cfg: TrainConfig, info: DistInfo) -> Stage:
    """HRNet pre-trained on 2D joint heatmaps of the HMR crops, as the official backbone was (its
    checkpoint still holds the pose head, `final_layer`); `hmr` then starts from it (backbone_weights).

    With `backbone_rotcam`, MEGA's rotation/camera head trains here too, on the pooled MEGA features
    with the hmr stage's rotation and reprojection losses, and hmr starts from it as well: heatmaps
    teach where joints are, not which way the body faces, and in hmr the head's signal competes with
    the token loss through two Dropout(0.5) layers (on the synthetic demo it stayed at the best-constant
    level for ~3000 hmr steps).
    """
    from train.model.backbones import build_backbone, check_backbone_matches_config
    from train.model.mega import rotcam_modules
    from train.synthetic import body as body_lib

    model_cfg = named_config(cfg.model_config, MegaConfig)
    if model_cfg.backbone != "hrnet":
        raise ConfigError(
            f"stage backbone trains HRNet's pose head; {model_cfg.name} uses a {model_cfg.backbone} backbone (start its hmr stage without backbone_weights)"
        )
    backbone = build_backbone(model_cfg)
    check_backbone_matches_config(model_cfg, backbone)
    module = HeatmapForward(
        backbone, rotcam_modules(model_cfg) if cfg.backbone_rotcam else None, yaw_head(cfg, model_cfg)
    )
    if cfg.init_weights:
        _continue_backbone(module, cfg.init_weights)
    if cfg.backbone_rotcam:
        _set_rotcam_dropout(module.rotcam_head, cfg.rotcam_dropout)
    heat_hw = (model_cfg.input_height // 4, model_cfg.input_width // 4)
    sigma = cfg.heatmap_sigma * heat_hw[1]
    if not cfg.backbone_rotcam and not cfg.yaw_bins:
        # the 1/32 heads only feed MEGA: nothing here would train them, and weight decay would shrink them
        for name in ("downsample_stage_1", "downsample_stage_2", "downsample_stage_3"):
            getattr(backbone, name).requires_grad_(False)

    def loss(module, batch):
        heatmaps, rot6d, cam, yaw_logits = module(batch["images"])
        term = losses.heatmap_loss(heatmaps, batch["joints2d"], sigma)
        # in input pixels, to read against the crop size
        err_px = heatmap_joint_error(heatmaps, batch["joints2d"]) * (model_cfg.input_width / heat_hw[1])
        # every rank must log the same names (distributed.all_mean), so a batch with no crop to judge
        # (none has 3 side joints in view: not seen on person-centred crops) logs 0 rather than nothing
        swaps = torch.nan_to_num(heatmap_side_swaps(heatmaps, batch["joints2d"], body_lib.JOINT_MIRROR), nan=0.0)
        out = {"loss": term, "heatmaps": term.detach(), "joint_px": err_px, "side_swaps": swaps}
        if rot6d is not None:
            rotmat = rot6d_to_matrix(rot6d.float())
            rot = losses.rotation_loss(rotmat, batch["rotmat"])
            joints_cam = batch["joints_canonical"] @ rotmat.transpose(1, 2)
            reproj = losses.reprojection_loss(joints_cam, cam.float(), batch["joints2d"])
            out["loss"] = term + cfg.rotation_loss_weight * rot + cfg.camera_loss_weight * reproj
            out.update(
                rotation=rot.detach(), camera=reproj.detach(), rotation_deg=_rotation_error_deg(rotmat, batch["rotmat"])
            )
        if yaw_logits is not None:
            yaw, logged = yaw_terms(yaw_logits, batch["rotmat"])
            out["loss"] = out["loss"] + cfg.yaw_loss_weight * yaw
            out.update(logged)
        return out

    return Stage(
        name="backbone", module=module, dataset=hmr_dataset(cfg, model_cfg, backbone), loss=loss,
        param_groups=[{"params": [p for p in module.parameters() if p.requires_grad], "lr_scale": 1.0}],
        export=lambda: (module.exported(), model_cfg),
    )  # fmt: skip


def _continue_backbone(module: HeatmapForward, path: str) -> None:
    """Start a backbone run from an earlier one's final.pt: the backbone, and the rotation/camera head
    when both runs train one (a run without the head may continue one that had it, not the reverse)."""
    from train.checkpoint import copy_matching

    sd = _backbone_checkpoint(path)
    if not any(k.startswith("backbone.") for k in sd):
        sd = {f"backbone.{k}": v for k, v in sd.items()}
    own = module.exported().state_dict()
    if not module.has_rotcam:
        own = {f"backbone.{k}": v for k, v in own.items()}
        sd = {k: v for k, v in sd.items() if k.startswith("backbone.")}
    copy_matching(own, sd, path, "does not fit this backbone run", "continue a run of the same model_config")


def _backbone_checkpoint(path: str) -> dict:
    """The state dict of a `backbone` stage's final.pt; an error naming the file if it is another kind."""
    from train.checkpoint import CheckpointError, read_checkpoint

    ckpt = read_checkpoint(path)
    if ckpt.get("stage") != "backbone":
        raise CheckpointError(
            f"{path}: not a backbone-stage checkpoint (stage {ckpt.get('stage')!r}); give the final.pt of `mega-rt train backbone`"
        )
    return ckpt["model"]


def _set_rotcam_dropout(rotcam_head: nn.Module, p: float) -> None:
    # a training setting, not a weight: the official head trains with 0.5, which on a small CPU run
    # leaves the linear head's gradient mostly noise
    for m in rotcam_head.modules():
        if isinstance(m, nn.Dropout):
            m.p = p


def _rotation_error_deg(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean geodesic angle (degrees) between two batches of rotation matrices."""
    cos = ((pred.detach().transpose(1, 2) @ true).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0))).mean()


def load_backbone_weights(mega: nn.Module, path: str) -> int:
    """Copy a `backbone` stage's HRNet (pose head included) into MEGA's backbone, and its rotation/
    camera head into MEGA's decoder when it trained one; every key must fit."""
    from train.checkpoint import copy_matching

    sd = _backbone_checkpoint(path)
    if not any(k.startswith("backbone.") for k in sd):  # without backbone_rotcam: the bare backbone
        sd = {f"backbone.{k}": v for k, v in sd.items()}
    # the rotation/camera head's keys are MEGA's decoder keys
    given = {k if k.startswith("backbone.") else f"decoder.{k}": v for k, v in sd.items()}
    own = {k: v for k, v in mega.state_dict().items() if k.startswith(("backbone.", "decoder."))}
    required = [k for k in own if k.startswith("backbone.")]
    return copy_matching(
        own, given, path, "backbone does not match this MEGA config", "train it with the same model_config", required
    )


# ---- pretrain ------------------------------------------------------------------------------------
@torch.no_grad()
def tokenize_sources(sources, tokenizer: nn.Module, info: DistInfo, chunk: int = 64) -> list[torch.Tensor]:
    """Every mesh of every source through the tokenizer, once; the work is split across processes
    and the results gathered, so every process ends with all tokens. -> one (N_s, 54) tensor per source."""
    device = next(tokenizer.parameters()).device
    out = []
    for source in sources:
        n = len(source)
        per = -(-n // info.world)  # ceil: equal shares for all_gather, the last one padded
        mine = range(info.rank * per, min(n, (info.rank + 1) * per))
        tokens = torch.zeros(per, 54, dtype=torch.long, device=device)
        for start in range(0, len(mine), chunk):
            idx = list(mine[start : start + chunk])
            tokens[start : start + len(idx)] = tokenizer.encode(source.verts(idx).to(device))
        out.append(all_gather_cat(tokens, info)[:n].cpu())
    return out


def pretrain_stage(cfg: TrainConfig, info: DistInfo) -> Stage:
    from train.data.batches import TokenBatches
    from train.model.mega import PretrainModel

    model_cfg = named_config(cfg.model_config, MegaConfig)
    model = PretrainModel(model_cfg)
    tokenizer = _load_tokenizer(cfg).to(info.device).requires_grad_(False)
    # pre-training sees only tokens: tokenize the meshes once instead of posing and encoding every batch
    meshes = mesh_dataset(cfg)
    dataset = TokenBatches(tokenize_sources(meshes.sources, tokenizer, info), cfg.mix_ratios, cfg.seed)

    def loss(module, batch):
        tokens = batch["tokens"]
        tokens_in, masked = _masked_inputs(tokens, batch["mask_noise"])
        logits = module(tokens_in, ~masked)
        ce = losses.masked_token_loss(logits, tokens, masked)
        return {
            "loss": cfg.token_loss_weight * ce,
            "tokens": ce.detach(),
            "token_accuracy": _token_accuracy(logits, tokens, masked),
        }

    return Stage(
        name="pretrain", module=model, dataset=dataset, loss=loss,
        param_groups=[{"params": list(model.parameters()), "lr_scale": 1.0}],
        export=lambda: (model, model_cfg),
    )  # fmt: skip


# ---- hmr -----------------------------------------------------------------------------------------
class HmrForward(nn.Module):
    """The training pass of MEGA in one forward (what DDP wraps): image features, image tokens and
    rotation/camera once per crop; the token encoder on the visible tokens; the decoder on both.
    The train-only heads (yaw bins on the pooled features, root-relative joints on the feature grid) are
    not part of MEGA, so they are never exported."""

    TRAIN_ONLY = ("yaw_head", "pose_head")

    def __init__(self, mega: nn.Module, yaw_head: nn.Module | None = None, pose_head: nn.Module | None = None):
        super().__init__()
        self.mega = mega
        self.yaw_head = yaw_head
        self.pose_head = pose_head

    def forward(self, images: torch.Tensor, tokens_in: torch.Tensor, visible: torch.Tensor):
        mega = self.mega
        features = mega.image_features(images)
        rot6d, cam = mega.decoder.rotcam(features)
        cls, feats = mega.encoder(tokens_in, visible)
        logits, _ = mega.decoder(mega.decoder.image_tokens(features), mega.decoder.slots(cls, feats, visible))
        yaw_logits = self.yaw_head(features.mean(dim=(2, 3))) if self.yaw_head is not None else None
        joints = self.pose_head(features).unflatten(1, (-1, 3)) if self.pose_head is not None else None
        return logits, rot6d, cam, yaw_logits, joints


def pose_head(cfg: TrainConfig, model_cfg: MegaConfig) -> nn.Module | None:
    """The train-only joint regressor of `pose_head_weight`: an MLP from the whole (C, h, w) feature grid
    (the image tokens' source) to the 24 root-relative canonical joints, or None when it is off. The
    token loss alone reaches the grid through the decoder's attention as a weak, hard-label signal; a
    dense 3D target makes the grid say the pose, as the yaw head made it say the facing."""
    if not cfg.pose_head_weight:
        return None
    from train.synthetic.body import NUM_JOINTS

    grid = model_cfg.cond_dim * model_cfg.cond_length
    return nn.Sequential(nn.Flatten(), nn.Linear(grid, 256), nn.GELU(), nn.Linear(256, NUM_JOINTS * 3))


def load_pretrained_tokens_model(mega: nn.Module, path: str) -> int:
    """Copy a PretrainModel checkpoint (encoder + token decoder) into MEGA; every key must fit.

    The pre-training model has MEGA's encoder and a decoder without image tokens or rotation/camera
    head; its keys are a subset of MEGA's with the same shapes. Returns the number of tensors loaded.
    """
    from train.checkpoint import copy_matching, read_checkpoint

    sd = read_checkpoint(path)["model"]
    own = mega.state_dict()
    required = [k for k in own if k.startswith(("encoder.", "decoder.transformer."))]
    return copy_matching(own, sd, path, "not a pre-training checkpoint of this MEGA config",
                         "give the final.pt of a pretrain run of the same model_config", required)  # fmt: skip


def _checkpoint_stage(ckpt: dict) -> str | None:
    """The training stage that wrote a checkpoint: final.pt says it, a training checkpoint.pt holds its
    TrainConfig; official files say nothing (None)."""
    if ckpt.get("stage"):
        return ckpt["stage"]
    if ckpt.get("config_type") == "TrainConfig" and isinstance(ckpt.get("config"), dict):
        return ckpt["config"].get("stage")
    return None


def _init_hmr(module: HmrForward, cfg: TrainConfig) -> None:
    """Start an hmr run from `init_weights`: a pre-trained token model (encoder + token decoder), or a
    whole MEGA to continue (an hmr final.pt or official checkpoint; an hmr checkpoint.pt also brings the
    train-only heads that this run has too, which must then be of the same size)."""
    from train.checkpoint import CheckpointError, copy_matching, read_checkpoint

    path = cfg.init_weights
    ckpt = read_checkpoint(path)
    stage = _checkpoint_stage(ckpt)
    if stage not in (None, "pretrain", "hmr"):
        raise CheckpointError(
            f"{path}: a {stage}-stage checkpoint; init_weights of hmr takes a pretrain or hmr run's final.pt"
        )
    sd = ckpt["model"]
    own = module.mega.state_dict()
    heads = {}
    if any(k.startswith("mega.") for k in sd):  # an hmr training checkpoint: HmrForward's own keys
        for name in HmrForward.TRAIN_ONLY:
            heads[name] = {k[len(name) + 1 :]: v for k, v in sd.items() if k.startswith(name + ".")}
        sd = {k[len("mega.") :]: v for k, v in sd.items() if k.startswith("mega.")}
    if stage == "pretrain" or (stage is None and set(sd) != set(own)):
        load_pretrained_tokens_model(module.mega, path)
        return
    if cfg.backbone_weights:
        raise CheckpointError(
            f"{path}: continues a whole MEGA, backbone included; remove backbone_weights from the config"
        )
    copy_matching(own, sd, path, f"does not fit MEGA {cfg.model_config!r}", "continue a run of the same model_config")
    yaw = heads.get("yaw_head")
    if yaw and module.yaw_head is not None:
        theirs = yaw["weight"].shape[0]
        if theirs != cfg.yaw_bins:
            raise CheckpointError(
                f"{path}: its yaw head has {theirs} bins, this run {cfg.yaw_bins}; set yaw_bins: {theirs} or start from its final.pt"
            )
        copy_matching(
            module.yaw_head.state_dict(), yaw, path, "its yaw head does not fit this run's", "start from its final.pt"
        )
    if heads.get("pose_head") and module.pose_head is not None:
        copy_matching(
            module.pose_head.state_dict(),
            heads["pose_head"],
            path,
            "its pose head does not fit this run's",
            "start from its final.pt",
        )


def hmr_stage(cfg: TrainConfig, info: DistInfo) -> Stage:
    from train.model.backbones import check_backbone_matches_config
    from train.model.mega import Mega

    model_cfg = named_config(cfg.model_config, MegaConfig)
    mega = Mega(model_cfg)
    check_backbone_matches_config(model_cfg, mega.backbone)
    module = HmrForward(mega, yaw_head(cfg, model_cfg), pose_head(cfg, model_cfg))
    if cfg.init_weights:
        _init_hmr(module, cfg)
    if cfg.backbone_weights:
        load_backbone_weights(mega, cfg.backbone_weights)
    # HRNet's pose-heatmap layer is stored for checkpoint compatibility but never used: freezing it
    # keeps it out of the optimiser (weight decay would shrink it) and out of DDP's gradient buckets.
    final_layer = getattr(mega.backbone, "final_layer", None)
    if final_layer is not None:
        final_layer.requires_grad_(False)
    if model_cfg.backbone == "vit" and cfg.vit_trainable_blocks > 0:
        mega.backbone.requires_grad_(False)
        for block in mega.backbone.blocks[-cfg.vit_trainable_blocks :]:
            block.requires_grad_(True)
        mega.backbone.last_norm.requires_grad_(True)
    _set_rotcam_dropout(mega.decoder.rotcam_head, cfg.rotcam_dropout)
    tokenizer = _load_tokenizer(cfg)
    targets = TokenTargets(tokenizer)

    def loss(module, batch):
        tokens = targets(batch["verts_canonical"], batch["keys"])
        tokens_in, masked = _masked_inputs(tokens, batch["mask_noise"], cfg.full_mask_prob)
        logits, rot6d, cam, yaw_logits, joints = module(batch["images"], tokens_in, ~masked)
        rotmat = rot6d_to_matrix(rot6d.float())
        ce = losses.masked_token_loss(logits, tokens, masked)
        rot = losses.rotation_loss(rotmat, batch["rotmat"])
        joints_cam = batch["joints_canonical"] @ rotmat.transpose(1, 2)
        reproj = losses.reprojection_loss(joints_cam, cam.float(), batch["joints2d"])
        total = cfg.token_loss_weight * ce + cfg.rotation_loss_weight * rot + cfg.camera_loss_weight * reproj
        out = {"tokens": ce.detach(), "rotation": rot.detach(), "camera": reproj.detach(),
               "rotation_deg": _rotation_error_deg(rotmat, batch["rotmat"]), "token_accuracy": _token_accuracy(logits, tokens, masked)}  # fmt: skip
        if yaw_logits is not None:
            yaw, logged = yaw_terms(yaw_logits, batch["rotmat"])
            total = total + cfg.yaw_loss_weight * yaw
            out.update(logged)
        if joints is not None:
            pose = losses.root_relative_joint_loss(joints, batch["joints_canonical"])
            total = total + cfg.pose_head_weight * pose
            out.update(pose=pose.detach(), pose_mm=1000 * pose.detach())
        return {"loss": total, **out}

    backbone = [p for p in mega.backbone.parameters() if p.requires_grad]
    rest = [p for n, p in module.named_parameters() if not n.startswith("mega.backbone.") and p.requires_grad]
    return Stage(
        name="hmr", module=module, dataset=hmr_dataset(cfg, model_cfg, mega.backbone), loss=loss,
        param_groups=[{"params": backbone, "lr_scale": cfg.backbone_lr_scale}, {"params": rest, "lr_scale": 1.0}],
        export=lambda: (mega, model_cfg), frozen=[tokenizer],
    )  # fmt: skip


STAGES = {"tokenizer": tokenizer_stage, "backbone": backbone_stage, "pretrain": pretrain_stage, "hmr": hmr_stage}


def build_stage(cfg: TrainConfig, info: DistInfo) -> Stage:
    return STAGES[cfg.stage](cfg, info)
