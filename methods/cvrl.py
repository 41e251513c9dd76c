"""cvrl: contrastive voxel-wise representation learning with geometric constraints (v1 reconstruction).

Paper: You, Zhao, Staib, Duncan, arXiv 2105.07059 v1 (2021; MICCAI 2022 under a later title). Only the abstract of v1
was available: this is a **reconstruction from the abstract**, every detail is a harness choice [H] of
docs/methods/cvrl.md (§1.1 below: docs/methods/README.md).
Reference code: none public.

Implementation details:
1. Student VNet (§1.1, 2 classes) + volume head g (GAP of x5 → MLP → L2) + voxel head ℓ (x9 at sampled positions →
   MLP → L2); momentum teacher = EMA (a_max 0.99) of network and heads; teacher input ξ(x) for all 4 samples [H].
2. K = 256 positions per sample, half from the teacher's predicted foreground, half background (filled from the
   other class when short), vectorised by ranked random keys [H].
3. L_vol: voxel anchors vs the teacher volume embedding of their own volume; negatives = other volumes of the batch
   plus a FIFO queue (Q = 64) of teacher volume embeddings from other cases, τ_g = 0.1 [H].
4. L_vox: InfoNCE of student vs teacher voxel embeddings over all B·K sampled positions, τ_l = 0.1 [H].
5. L_ei: Fourier-domain elastic-interaction energy of p_fg − y per axial slice, normalised by the label's energy [H].
6. L_con: softmax MSE student vs teacher on U; L = L_sup + R(t)·(w_vol·L_vol + w_vox·L_vox + w_con·L_con) + w_ei·L_ei.

Known deviations: none known against the reconstruction; the paper's own details are unknown (see above). The loop
provides `batch.extras["case_id"]` (`needs_case_id`); called without it (unit tests), the negatives are the other
volumes of the batch only and `w/queue_used` logs 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.method import Batch, BuildNet, Method, Progress, StepOutput, register_method
from harness.numerics.ema import freeze_teacher, update_ema
from harness.numerics.losses import add_input_noise, softmax_mse, supervised_loss
from harness.numerics.ramps import consistency_weight

EI_MODES = ("slice2d", "off")


@dataclass(frozen=True)
class Config:
    """CVRL v1 reconstruction hyperparameters (docs/methods/cvrl.md); all [H]."""

    variant: str = "v1_geometric"
    """Which arXiv version is reconstructed; only `v1_geometric` [H, docs/methods/cvrl.md]."""
    ema_decay: float = 0.99
    """Momentum-teacher EMA ceiling [H, MT/UA-MT value]."""
    voxels_per_volume: int = 256
    """K sampled positions per sample [H]."""
    fg_fraction: float = 0.5
    """Share of K drawn from the teacher's predicted foreground [H]."""
    queue_size: int = 64
    """Q teacher volume embeddings in the FIFO queue [H]."""
    tau_volume: float = 0.1
    """Temperature τ_g of the voxel-to-volume contrast [H]."""
    tau_voxel: float = 0.1
    """Temperature τ_l of the voxel-to-voxel contrast [H]."""
    w_vol: float = 0.1
    """Weight of L_vol, ramped [H]."""
    w_vox: float = 0.1
    """Weight of L_vox, ramped [H]."""
    w_con: float = 0.1
    """Weight of the consistency, ramped [H]."""
    w_ei: float = 0.1
    """Weight of the elastic-interaction regulariser, constant [H]."""
    ei_mode: str = "slice2d"
    """`slice2d` (per axial slice) or `off` [H]."""
    exclude_same_class_negatives: bool = False
    """Drop voxel negatives whose teacher label equals the anchor's [H]."""
    embed_dim: int = 128
    """Embedding size of both heads [H]."""
    ramp: tuple[int, float] = (150, 40.0)
    """(iterations per ramp epoch, ramp length in epochs) of R(t) [H, protocol §3.4]."""
    noise_std: float = 0.1
    """Std of the teacher's input noise [C: UA-MT]."""
    noise_clip: float = 0.2
    """Clip bound of the teacher's input noise [C: UA-MT]."""
    has_dropout: bool = True
    """Dropout3d(0.5) in student and teacher [C: UA-MT]."""

    def __post_init__(self) -> None:
        if self.variant != "v1_geometric":
            raise ValueError(f"variant must be 'v1_geometric'; got {self.variant!r}")
        if self.ei_mode not in EI_MODES:
            raise ValueError(f"ei_mode must be one of {EI_MODES}; got {self.ei_mode!r}")
        if self.voxels_per_volume < 1 or not 0.0 <= self.fg_fraction <= 1.0 or self.queue_size < 1:
            raise ValueError(
                f"need voxels_per_volume >= 1, fg_fraction in [0, 1], queue_size >= 1; got "
                f"{self.voxels_per_volume}, {self.fg_fraction}, {self.queue_size}"
            )
        if self.tau_volume <= 0 or self.tau_voxel <= 0:
            raise ValueError(f"tau_volume and tau_voxel must be > 0; got {self.tau_volume}, {self.tau_voxel}")


class Heads(nn.Module):
    """Volume head g (256 → 256 → D on GAP(x5)) and voxel head ℓ (16 → 64 → D on x9 features), both L2-normalised."""

    def __init__(self, bottleneck: int, top: int, dim: int) -> None:
        super().__init__()
        self.vol = nn.Sequential(nn.Linear(bottleneck, 256), nn.ReLU(), nn.Linear(256, dim))
        self.vox = nn.Sequential(nn.Linear(top, 64), nn.ReLU(), nn.Linear(64, dim))

    def forward(self, out: dict, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(volume embeddings `[B, D]`, voxel embeddings `[B, K, D]` at flat positions `idx` `[B, K]`)."""
        g = F.normalize(self.vol(out["feat_bottleneck"].mean(dim=(2, 3, 4))), dim=-1)
        feats = out["feat_top"].flatten(2)  # [B, C, N]
        picked = torch.gather(feats, 2, idx[:, None, :].expand(-1, feats.shape[1], -1)).transpose(1, 2)
        return g, F.normalize(self.vox(picked), dim=-1)


def sample_positions(fg: torch.Tensor, k: int, fg_fraction: float) -> torch.Tensor:
    """K flat positions per sample: min(round(K·fg_fraction), #fg) foreground, the rest background.

    Args:
        fg: `[B, N]` bool predicted foreground; k: K ≤ N; fg_fraction: share of foreground.

    Returns:
        `[B, K]` int64 indices, distinct within a sample (when #bg ≥ K − n_fg).
    """
    if k > fg.shape[1]:
        raise ValueError(f"voxels_per_volume {k} exceeds the {fg.shape[1]} voxels of a patch")
    r = torch.rand(fg.shape, device=fg.device)
    fg_rank = torch.topk(r + 2.0 * fg, k, dim=1).indices
    bg_rank = torch.topk(r + 2.0 * ~fg, k, dim=1).indices
    n_fg = torch.clamp(fg.sum(1), max=round(k * fg_fraction))[:, None]  # [B, 1]
    j = torch.arange(k, device=fg.device)[None, :]
    from_bg = torch.gather(bg_rank, 1, (j - n_fg).clamp(min=0))
    return torch.where(j < n_fg, fg_rank, from_bg)


# -- the method's own numerics -----------------------------------------------------------------------------------------
class VolumeQueue(nn.Module):
    """FIFO queue of teacher volume embeddings, each with the ID of its case (cvrl, `docs/methods/cvrl.md` row 5).

    State is kept in buffers (saved in checkpoints, so a resumed run sees the same queue).

    Args:
        size: capacity Q.
        dim: embedding size D.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1; got {size}, {dim}")
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("case_ids", torch.full((size,), -1, dtype=torch.long))  # -1: empty slot
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor, case_ids: torch.Tensor) -> None:
        """Enqueue `keys` `[N, D]` (detached) with `case_ids` `[N]`, overwriting the oldest entries."""
        if keys.ndim != 2 or keys.shape[1] != self.keys.shape[1] or case_ids.shape != (keys.shape[0],):
            raise ValueError(
                f"keys must be [N, {self.keys.shape[1]}] and case_ids [N]; got {tuple(keys.shape)}, "
                f"{tuple(case_ids.shape)}"
            )
        size = self.keys.shape[0]
        idx = (self.ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.keys[idx] = keys.detach().to(self.keys.dtype)
        self.case_ids[idx] = case_ids.to(self.case_ids.dtype)
        self.ptr.copy_((self.ptr + keys.shape[0]) % size)

    def negative_mask(self, anchor_case_ids: torch.Tensor) -> torch.Tensor:
        """`[N, Q]` bool: queue entry usable as a negative for each anchor (filled and from another case)."""
        filled = self.case_ids >= 0
        return filled[None, :] & (self.case_ids[None, :] != anchor_case_ids[:, None])


def info_nce_masked(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, mask: torch.Tensor, tau: float
) -> torch.Tensor:
    """Per-anchor −log[exp(a·p/τ) / (exp(a·p/τ) + Σ_{k: mask} exp(a·k/τ))].

    Args:
        anchors, positives: `[N, D]`; negatives: `[M, D]`; mask: `[N, M]` bool, True where k is a negative of anchor n.
        tau: temperature.

    Returns:
        `[N]` losses. Memory: `[N, M]`.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    if mask.shape != (anchors.shape[0], negatives.shape[0]):
        raise ValueError(f"mask must be [N, M] = {(anchors.shape[0], negatives.shape[0])}; got {tuple(mask.shape)}")
    pos = (anchors * positives).sum(-1, keepdim=True) / tau  # [N, 1]
    neg = (anchors @ negatives.T / tau).masked_fill(~mask, float("-inf"))  # [N, M]
    return -(pos[:, 0] - torch.logsumexp(torch.cat([pos, neg], dim=1), dim=1))


def elastic_energy(d: torch.Tensor) -> torch.Tensor:
    """Fourier-domain energy per (x, y) slice: E(D) = Σ_k |k|·|F(k)|² / (X·Y), k = 2π × DFT frequency.

    Args:
        d: `[..., X, Y]` mismatch maps (e.g. p_fg − y per axial slice, z moved in front).

    Returns:
        `[...]` energies (0 for a constant map; grows with the extent of the mismatch).
    """
    if d.ndim < 2:
        raise ValueError(f"d must be [..., X, Y]; got {tuple(d.shape)}")
    x, y = d.shape[-2:]
    kx = 2 * torch.pi * torch.fft.fftfreq(x, device=d.device, dtype=d.dtype)
    ky = 2 * torch.pi * torch.fft.fftfreq(y, device=d.device, dtype=d.dtype)
    k = torch.sqrt(kx[:, None] ** 2 + ky[None, :] ** 2)  # [X, Y]
    f = torch.fft.fft2(d)
    return (k * f.abs() ** 2).sum(dim=(-2, -1)) / (x * y)


def elastic_interaction_loss(p_fg: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_ei = Σ_{b,z} E(p_fg − y) / (Σ_{b,z} E(y) + 1) over axial slices (`docs/methods/cvrl.md` row 7, [H]).

    Args:
        p_fg: foreground probabilities `[B, X, Y, Z]`; y: labels `[B, X, Y, Z]` in {0, 1}.

    Returns:
        Scalar. Memory: two complex copies of the labeled volumes.
    """
    if p_fg.shape != y.shape or p_fg.ndim != 4:
        raise ValueError(f"p_fg and y must both be [B, X, Y, Z]; got {tuple(p_fg.shape)}, {tuple(y.shape)}")
    yf = y.to(p_fg.dtype)
    num = elastic_energy((p_fg - yf).permute(0, 3, 1, 2)).sum()
    return num / (elastic_energy(yf.permute(0, 3, 1, 2)).sum() + 1.0)


@register_method("cvrl")
class CVRL(Method):
    VERSION = 2
    Config = Config
    output_kind = "softmax"
    needs_unlabeled = True
    needs_case_id = True

    def __init__(self, cfg: Config, build_net: BuildNet, device: torch.device) -> None:
        super().__init__(cfg, build_net, device)
        self.net = build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device)
        self.teacher = freeze_teacher(build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device))
        top = self.net.out_conv.in_channels
        self.heads = Heads(16 * top, top, cfg.embed_dim).to(device)
        self.teacher_heads = freeze_teacher(Heads(16 * top, top, cfg.embed_dim).to(device))
        self.queue = VolumeQueue(cfg.queue_size, cfg.embed_dim).to(device)

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": [*self.net.parameters(), *self.heads.parameters()]}

    def _volume_contrast(self, vox_s, g_t, case_ids) -> torch.Tensor:
        """Negatives: the other volumes of the batch and the queue, never a volume of the anchor's own case."""
        b, k, _ = vox_s.shape
        owner = torch.arange(b, device=vox_s.device).repeat_interleave(k)  # volume of each anchor
        batch_mask = owner[:, None] != torch.arange(b, device=vox_s.device)[None, :]
        if case_ids is None:
            queue_mask = torch.zeros(b * k, self.queue.keys.shape[0], dtype=torch.bool, device=vox_s.device)
        else:
            batch_mask &= case_ids[owner][:, None] != case_ids[None, :]
            queue_mask = self.queue.negative_mask(case_ids[owner])
        negs = torch.cat([g_t, self.queue.keys])
        anchors = vox_s.flatten(0, 1)
        return info_nce_masked(anchors, g_t[owner], negs, torch.cat([batch_mask, queue_mask], 1), self.cfg.tau_volume)

    def _voxel_contrast(self, vox_s, vox_t, labels) -> torch.Tensor:
        a, c = vox_s.flatten(0, 1), vox_t.flatten(0, 1)
        mask = ~torch.eye(len(a), dtype=torch.bool, device=a.device)
        if self.cfg.exclude_same_class_negatives:
            lab = labels.flatten()
            mask &= lab[:, None] != lab[None, :]
        return info_nce_masked(a, c, c, mask, self.cfg.tau_voxel).mean()

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        cfg, n_l = self.cfg, batch.n_labeled
        if batch.x_u.shape[0] == 0:
            raise ValueError("cvrl needs unlabeled samples in the batch (n_labeled < batch size)")
        case_ids = batch.extras.get("case_id")
        out = self.net.forward_features(batch.x)
        with torch.no_grad():
            out_t = self.teacher.forward_features(add_input_noise(batch.x, cfg.noise_std, cfg.noise_clip))
            fg_t = out_t["logits"].argmax(1).flatten(1).bool()  # [B, N]
            idx = sample_positions(fg_t, cfg.voxels_per_volume, cfg.fg_fraction)
            g_t, vox_t = self.teacher_heads(out_t, idx)
        _, vox_s = self.heads(out, idx)
        sup, logs = supervised_loss(out["logits"][:n_l], batch.y)
        l_vol = self._volume_contrast(vox_s, g_t, case_ids).mean()
        l_vox = self._voxel_contrast(vox_s, vox_t, torch.gather(fg_t, 1, idx))
        l_con = softmax_mse(out["logits"][n_l:], out_t["logits"][n_l:]).mean()
        l_ei = torch.zeros((), device=batch.x.device)
        if cfg.ei_mode == "slice2d":
            l_ei = elastic_interaction_loss(torch.softmax(out["logits"][:n_l], 1)[:, 1], batch.y)
        r = consistency_weight(progress.it, 1.0, *cfg.ramp)
        loss = sup + r * (cfg.w_vol * l_vol + cfg.w_vox * l_vox + cfg.w_con * l_con) + cfg.w_ei * l_ei
        if case_ids is not None:
            self.queue.push(g_t, case_ids)
        logs = {
            "loss/sup": sup.item(),
            **logs,
            "loss/vol": l_vol.item(),
            "loss/vox": l_vox.item(),
            "loss/con": l_con.item(),
            "loss/ei": l_ei.item(),
            "w/ramp": r,
            "w/queue_used": float(case_ids is not None),
        }
        return StepOutput(loss=loss, logs=logs)

    def after_optimizer_step(self, progress: Progress) -> None:
        update_ema(self.teacher, self.net, progress.it, self.cfg.ema_decay)
        update_ema(self.teacher_heads, self.heads, progress.it, self.cfg.ema_decay)
