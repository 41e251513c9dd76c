"""sup_local_contrast: global then supervised local contrastive pre-training, then fine-tuning (three DAG jobs).

Paper: Hu, Zeng, Xu, Shi, "Semi-supervised Contrastive Learning for Label-efficient Medical Image Segmentation",
MICCAI 2021, arXiv 2109.07407. Reference code (2D): xhu248/semi_cotrast_seg. The 3D adaptation is the harness's.

Implementation details (docs/methods/sup_local_contrast.md):
1. Stage 1 (`stage1`, DAG rule `pretrain_stage1`): the V-Net encoder (stages 1–5) and a global head
   GAP(x5) → Linear(16f → 16f) → Linear(16f → 128), no non-linearity [C], L2-normalised; NT-Xent at τ = 0.5 [C] over
   two views per volume, 8 volumes per batch [H]; views = two independent crops (LA: with RandomRotFlip) [H], then
   brightness ×U(0.75, 1.25), gamma U(0.7, 1.5) on min-max-rescaled intensities, Gaussian noise σ 0.1 [H]; Adam 3e-4,
   wd 1e-5 [C], 10 % linear warm-up then cosine [H], 2000 iterations [H]. Data: every training image, labels never
   read; never a test image [H: the 2D code is transductive].
2. Stage 2 (`stage2`): init from stage 1's encoder only (decoder random) [C]; embedding x9 (pre-dropout) → 1×1×1
   Conv(f → 256) → Conv(256 → 128), no activation, L2-normalised [H]; one crop per volume and two intensity views of
   it (labels unchanged) [C]; positions every 8 voxels on all axes ("stride" mode [H: s = 8]) or within 16³ blocks
   ("block" mode); pixel SupCon at τ = 0.1 [C run_coseg.sh]: anchors non-background, positives every other position
   with the same label, background in the denominator [C]; Adam 1e-4, wd 1e-4, 2 labeled volumes, 2000 iterations
   [H]. Data: the first N labeled cases only [H].
3. Stage 3 (`train`): init from stage 2's network with a fresh output convolution [C]; then exactly `supervised`:
   0.5·(CE + Dice_fg), the protocol's SGD schedule and iterations, 4 labeled samples per batch [H].
4. Test: the stage-3 network, softmax, argmax.

Known deviations: 3D V-Net with BatchNorm instead of the 2D U-Net with instance norm; no elastic, scaling or
rotation-by-any-angle views (protocol augmentation only); stride s = 8 instead of 4 (memory); SupCon without the
reference's base-temperature factor (a constant scale of the loss).
Sanity numbers: published only for 2D Hippocampus and MMWHS (secondary source; not in `harness/report/published.csv`);
users of the 2D code report results below the paper's random baseline (xhu248/semi_cotrast_seg issue #2), so no
LA/Pancreas target exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.method import Batch, BuildNet, Method, Progress, Stage, StepOutput, register_method
from harness.numerics.losses import supervised_loss

#: V-Net modules of the encoder (stages 1–5 and their down-sampling), the part stage 1 trains and hands on.
ENCODER = (
    "block_one",
    "block_one_dw",
    "block_two",
    "block_two_dw",
    "block_three",
    "block_three_dw",
    "block_four",
    "block_four_dw",
    "block_five",
)
MODES = ("stride", "block")


@dataclass(frozen=True)
class Stage1:
    """Global contrastive pre-training (`method_overrides.sup_local_contrast.stage1.*`)."""

    iterations: int = 2000
    """Optimiser steps [H] (the 2D code: 100 epochs)."""
    batch_volumes: int = 8
    """Volumes per batch, two views each [H] (2D code: 120 slices)."""
    tau: float = 0.5
    """NT-Xent temperature [C]."""
    lr: float = 3e-4
    """Adam learning rate [C]."""
    weight_decay: float = 1e-5
    """Adam weight decay [C]."""
    warmup_fraction: float = 0.1
    """Linear warm-up share of the iterations, then cosine to 0 [H] (2D code: 10 warm-up epochs)."""
    proj_dim: int = 128
    """Output size of the global head [H] (2D: 256 from 512)."""


@dataclass(frozen=True)
class Stage2:
    """Supervised local contrastive pre-training (`method_overrides.sup_local_contrast.stage2.*`)."""

    iterations: int = 2000
    """Optimiser steps [H] (2D code: 60 epochs)."""
    batch_volumes: int = 2
    """Labeled volumes per batch, two intensity views each [H]."""
    tau: float = 0.1
    """SupCon temperature [C: run_coseg.sh]."""
    lr: float = 1e-4
    """Adam learning rate [C]."""
    weight_decay: float = 1e-4
    """Adam weight decay [C]."""
    mode: str = "stride"
    """"stride": one group of every `stride`-th position; "block": SupCon within each block³ block [C modes, H 3D]."""
    stride: int = 8
    """Keep every s-th voxel on all three axes [H] (2D code: 4); LA 14·14·10 = 1,960 positions per view."""
    block_size: int = 16
    """Block edge in voxels in block mode [S: 16 × 16 in 2D; H: 16 along z too]; positions inside keep the stride."""
    hidden_dim: int = 256
    """Channels of the first 1×1×1 convolution of the local head [C: 256]."""
    proj_dim: int = 128
    """Output size of the local head [C: 128]."""


@dataclass(frozen=True)
class Intensity:
    """Intensity views of stages 1–2 [H] (`method_overrides.sup_local_contrast.intensity.*`), in this order."""

    brightness: tuple[float, float] = (0.75, 1.25)
    """Multiply the image by U(lo, hi), one factor per view."""
    gamma: tuple[float, float] = (0.7, 1.5)
    """Gamma U(lo, hi) applied to the view's min-max-rescaled intensities (range restored afterwards)."""
    noise_std: float = 0.1
    """Additive Gaussian noise σ per voxel."""


@dataclass(frozen=True)
class Config:
    has_dropout: bool = True
    """Dropout3d(0.5) on x5 and x9 in stages 2–3, as `supervised` [H]."""
    stage1: Stage1 = field(default_factory=Stage1)
    stage2: Stage2 = field(default_factory=Stage2)
    intensity: Intensity = field(default_factory=Intensity)

    def __post_init__(self) -> None:
        if self.stage2.mode not in MODES:
            raise ValueError(f"stage2.mode must be one of {MODES}; got {self.stage2.mode!r}")
        if self.stage2.stride < 1 or self.stage2.block_size % self.stage2.stride:
            raise ValueError(
                f"stage2.block_size ({self.stage2.block_size}) must be a multiple of stage2.stride "
                f"({self.stage2.stride}) >= 1"
            )
        if min(self.stage1.tau, self.stage2.tau, *self.intensity.brightness, *self.intensity.gamma) <= 0:
            raise ValueError("stage taus, brightness and gamma ranges must be > 0")


def intensity_view(x: torch.Tensor, cfg: Intensity) -> torch.Tensor:
    """One random intensity view of each sample of `x` `[B, 1, X, Y, Z]` (torch's global RNG, restored on resume)."""
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)

    def uniform(lo_hi: tuple[float, float]) -> torch.Tensor:
        return torch.empty(shape, device=x.device).uniform_(*lo_hi)

    x = x * uniform(cfg.brightness)
    lo = x.amin(dim=(1, 2, 3, 4), keepdim=True)
    span = (x.amax(dim=(1, 2, 3, 4), keepdim=True) - lo).clamp_min(1e-8)
    x = ((x - lo) / span) ** uniform(cfg.gamma) * span + lo
    return x + cfg.noise_std * torch.randn_like(x)


# -- the method's own numerics -----------------------------------------------------------------------------------------
def nt_xent(z: torch.Tensor, tau: float) -> torch.Tensor:
    """NT-Xent (SimCLR) over 2B view embeddings ordered view-major: row i and row (i + B) mod 2B are a positive pair.

    L_g = mean_i −log[exp(z_i·z_j(i)/τ) / Σ_{k≠i} exp(z_i·z_k/τ)] (`docs/methods/sup_local_contrast.md` row 4).
    Memory: one `[2B, 2B]` matrix.

    Args:
        z: `[2B, D]` embeddings (normally L2-normalised, so z_i·z_k is the cosine similarity).
        tau: temperature τ > 0.

    Returns:
        Scalar loss.
    """
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[0] % 2:
        raise ValueError(f"z must be [2B, D] with B >= 1; got {tuple(z.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / tau).masked_fill(self_mask, float("-inf"))
    target = (torch.arange(n, device=z.device) + n // 2) % n
    return F.cross_entropy(logits, target)


def local_supcon(f: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Pixel supervised contrast of Hu et al. (the reference code's form), per group of positions.

    Source: `docs/methods/sup_local_contrast.md` row 13.

    Within each group g, for every anchor a with a non-background label and at least one positive:
    ℓ_a = −(1/|P(a)|)·Σ_{p∈P(a)} log[exp(f_a·f_p/τ) / Σ_{n≠a} exp(f_a·f_n/τ)], with P(a) the other positions of the
    group with a's label (background positions are in every denominator but are never anchors). The loss is the mean
    of ℓ_a over the anchors of all groups (0, with a gradient path, when there is none).

    Args:
        f: `[G, P, D]` embeddings (L2-normalised): G groups (blocks, or 1 for the stride mode) of P positions.
        labels: `[G, P]` integer labels (0 = background).
        tau: temperature τ > 0.

    Returns:
        Scalar loss. Memory: `[G, P, P]` similarities.
    """
    if f.ndim != 3 or labels.shape != f.shape[:2]:
        raise ValueError(f"f must be [G, P, D] and labels [G, P]; got {tuple(f.shape)}, {tuple(labels.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    self_mask = torch.eye(f.shape[1], dtype=torch.bool, device=f.device)
    logits = (f @ f.transpose(1, 2) / tau).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=2, keepdim=True)
    positive = (labels[:, :, None] == labels[:, None, :]) & ~self_mask
    n_pos = positive.sum(dim=2)
    anchors = (labels != 0) & (n_pos > 0)
    if not anchors.any():
        return f.sum() * 0.0
    pos_log_prob = log_prob.masked_fill(~positive, 0.0).sum(dim=2)
    return -(pos_log_prob[anchors] / n_pos[anchors]).mean()


def position_groups(
    emb: torch.Tensor, labels: torch.Tensor, stride: int, block: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample an embedding map every `stride` voxels and group the positions for `local_supcon`.

    Args:
        emb: `[V, D, X, Y, Z]` embeddings of V volumes/views.
        labels: `[V, X, Y, Z]` labels at full resolution (read at the same positions).
        stride: keep positions 0, s, 2s, ... on every axis.
        block: None (stride mode: one group of every kept position of every volume) or a block edge in voxels
            (block mode: one group per block of block³ voxels, holding the kept positions of that block in every
            volume); block must be a multiple of stride and divide X, Y and Z.

    Returns:
        (f `[G, P, D]`, labels `[G, P]`).
    """
    if emb.ndim != 5 or labels.shape != (emb.shape[0], *emb.shape[2:]):
        raise ValueError(
            f"emb must be [V, D, X, Y, Z] and labels [V, X, Y, Z]; got {tuple(emb.shape)}, {tuple(labels.shape)}"
        )
    if stride < 1:
        raise ValueError(f"stride must be >= 1; got {stride}")
    e = emb[:, :, ::stride, ::stride, ::stride]
    lab = labels[:, ::stride, ::stride, ::stride]
    v, d = e.shape[:2]
    if block is None:
        return e.permute(0, 2, 3, 4, 1).reshape(1, -1, d), lab.reshape(1, -1)
    if block % stride or any(s % block for s in emb.shape[2:]):
        raise ValueError(
            f"block ({block}) must be a multiple of stride ({stride}) and divide the patch {tuple(emb.shape[2:])}"
        )
    b = block // stride
    nx, ny, nz = (s // b for s in e.shape[2:])
    e = e.reshape(v, d, nx, b, ny, b, nz, b).permute(2, 4, 6, 0, 3, 5, 7, 1).reshape(nx * ny * nz, -1, d)
    lab = lab.reshape(v, nx, b, ny, b, nz, b).permute(1, 3, 5, 0, 2, 4, 6).reshape(nx * ny * nz, -1)
    return e, lab


@register_method("sup_local_contrast")
class SupLocalContrast(Method):
    VERSION = 1
    Config = Config
    output_kind = "softmax"
    needs_unlabeled = False
    STAGES = (
        # no labels: trained once per dataset and seed, shared by every labeled count
        Stage(
            name="stage1",
            data="images",
            settings="stage1",
            step="global_step",
            views=2,
            schedule="warmup_cosine",
            modules=("net", "global_head"),
            trains="encoder_and_global_head",
        ),
        Stage(
            name="stage2",
            data="labeled",
            settings="stage2",
            step="local_step",
            modules=("net", "local_head"),
            starts_from="take_encoder",
        ),
    )
    TRAIN_MODULES = ("net",)
    TRAIN_STARTS_FROM = "take_all_but_output_conv"

    def __init__(self, cfg: Config, build_net: BuildNet, device: torch.device) -> None:
        super().__init__(cfg, build_net, device)
        self.net = build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device)
        f = self.net.out_conv.in_channels
        c5 = 16 * f
        self.global_head = nn.Sequential(nn.Linear(c5, c5), nn.Linear(c5, cfg.stage1.proj_dim)).to(device)
        s2 = cfg.stage2
        self.local_head = nn.Sequential(
            nn.Conv3d(f, s2.hidden_dim, kernel_size=1), nn.Conv3d(s2.hidden_dim, s2.proj_dim, kernel_size=1)
        ).to(device)

    # -- hand-offs between the stages -------------------------------------------------------------------------------
    def encoder_and_global_head(self) -> list[nn.Parameter]:
        """Stage 1 trains the encoder (stages 1–5) and the global head; the decoder waits for stage 2."""
        return [p for name in ENCODER for p in getattr(self.net, name).parameters()] + list(
            self.global_head.parameters()
        )

    def take_encoder(self, state: dict[str, Any]) -> None:
        """Stage 2 starts from stage 1's encoder; its decoder starts from random weights [C]."""
        self._load_net({k: v for k, v in state["net"].items() if k.split(".")[0] in ENCODER}, "stage1")

    def take_all_but_output_conv(self, state: dict[str, Any]) -> None:
        """The fine-tuning starts from stage 2's network with a fresh output convolution [C]."""
        self._load_net({k: v for k, v in state["net"].items() if not k.startswith("out_conv.")}, "stage2")

    def _load_net(self, keep: dict[str, torch.Tensor], stage: str) -> None:
        unexpected = self.net.load_state_dict(keep, strict=False).unexpected_keys
        if unexpected:
            raise KeyError(f"stage {stage} checkpoint has keys the network lacks: {unexpected}")

    # -- losses ----------------------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        """Stage 3: exactly `supervised` on the labeled batches."""
        logits = self.net(batch.x_l)
        loss, logs = supervised_loss(logits, batch.y)
        return StepOutput(loss=loss, logs={"loss/sup": loss.item(), **logs})

    def global_step(self, batch: Batch, progress: Progress) -> StepOutput:
        """Batch: 2B image-only samples, view-major (sample j and j + B are two crops of one volume)."""
        x5 = self.net.encode(intensity_view(batch.x, self.cfg.intensity))[4]
        z = F.normalize(self.global_head(x5.mean(dim=(2, 3, 4))), dim=1)
        loss = nt_xent(z, self.cfg.stage1.tau)
        return StepOutput(loss=loss, logs={"loss/global": loss.item()})

    def local_step(self, batch: Batch, progress: Progress) -> StepOutput:
        """Batch: B labeled crops; two intensity views of each share the crop, hence the label.

        The head is 1×1×1, so it runs on the strided positions only (exactly what running it everywhere and then
        sampling gives, at 1/s³ of the memory: at LA size the full-resolution 256-channel map alone would be 1 GB).
        """
        s2 = self.cfg.stage2
        if s2.mode == "block" and any(p % s2.block_size for p in batch.x.shape[2:]):
            raise ValueError(f"stage2.block_size {s2.block_size} must divide the patch size {tuple(batch.x.shape[2:])}")
        x = torch.cat([intensity_view(batch.x_l, self.cfg.intensity), intensity_view(batch.x_l, self.cfg.intensity)])
        s = s2.stride
        top = self.net.forward_features(x)["feat_top"][:, :, ::s, ::s, ::s]
        emb = F.normalize(self.local_head(top), dim=1)
        block = s2.block_size // s if s2.mode == "block" else None
        f, labels = position_groups(emb, torch.cat([batch.y, batch.y])[:, ::s, ::s, ::s], 1, block)
        loss = local_supcon(f, labels, s2.tau)
        return StepOutput(loss=loss, logs={"loss/local": loss.item(), "w/anchors": float((labels != 0).sum())})
