"""simcvd: boundary-aware contrastive distillation in a mean teacher on the dual-head V-Net.

Paper: You, Zhou, Zhao, Staib, Duncan, "SimCVD: Simple Contrastive Voxel-Wise Representation Distillation for
Semi-Supervised Medical Image Segmentation", IEEE TMI 2022 (arXiv 2108.06227 v4).
Reference code: none public; every detail the paper leaves open is a labelled harness choice [H] of
docs/methods/simcvd.md, where all of them are listed; § numbers below refer to docs/methods/README.md.

Implementation details:
1. Student and EMA teacher (a_max 0.999, warm-up of §0) are dual-head V-Nets (tanh SDM, 1-channel logit) [P, §1.2].
2. Student input: x_L clean, x_U + η_s; teacher input x_U + η_t (independent draws of ξ, §0) [P form, H values].
3. L_sup = 0.5·(BCE + Dice_fg) on σ(o_L) + α·MSE(q_L, SDF(y_L)); SDF from the loader (harness.numerics.sdf)
   [P, H weights].
4. L_contrast: boundary-aware volumes x_U + q (clean x) through the slice projection head (AlphaDropout, pool per
   z-slice, MLP, L2) of student and EMA teacher; symmetric InfoNCE over all B_U·Z slices at τ [P, H].
5. L_pd: softmax over the teacher bottleneck positions of the same volume of cos(v^s_j, v^t_k) [P]; reduction
   mean over positions [H] (`pd_reduction`).
6. L_con: MSE of sigmoid probabilities, student vs teacher, unlabeled samples [P form, H target].
7. L = L_sup + R(t)·(λ·L_contrast + β·L_pd + γ·L_con), R(t) = r(⌊t/150⌋, 40) [H]; test: σ(o) > 0.5 on the student.

Known deviations: one crop shared by student and teacher (the paper's per-network affine + crop would break the slice
correspondence) [H]; weight decay 5e-4 and the LR step at 3000 are loop keys (`protocol.weight_decay`,
`protocol.lr_step`) that the config must set for this method.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.method import Batch, BuildNet, Method, Progress, StepOutput, register_method
from harness.nets.heads import SegmentationHead
from harness.numerics.ema import freeze_teacher, update_ema
from harness.numerics.losses import add_input_noise, dice_fg, require_labels
from harness.numerics.ramps import consistency_weight, sigmoid_rampup
from harness.numerics.sdf import signed_distance_map

RAMP_MODES = ("stepped", "continuous")


@dataclass(frozen=True)
class Config:
    """SimCVD hyperparameters (docs/methods/simcvd.md); weight decay 5e-4 and lr_step 3000 are loop keys."""

    alpha_sdf: float = 0.1
    """Weight α of the SDM regression in L_sup, constant [P]."""
    lambda_contrast: float = 0.5
    """Weight λ of the boundary-aware slice InfoNCE, ramped [P value; H ramp]."""
    beta_pd: float = 0.1
    """Weight β of the pair-wise distillation, ramped [P value; H ramp]."""
    gamma_con: float = 0.1
    """Weight γ of the probability consistency, ramped [P value; H ramp]."""
    tau: float = 0.5
    """InfoNCE temperature τ [P]."""
    pd_temperature: float = 1.0
    """Temperature of the pair-wise distillation softmax; 1.0 = the paper's none [P]."""
    pd_reduction: str = "mean"
    """`mean` over positions [H] or `sum` over positions (paper form [P]), then mean over volumes."""
    head_dropout: float = 0.1
    """AlphaDropout p in the projection head [P]."""
    head_pool: int = 128
    """Adaptive average pool side per z-slice [P]."""
    head_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the 3-layer MLP [H; NF in the paper]."""
    head_out: int = 128
    """Embedding size [H; NF]."""
    l2_normalise: bool = True
    """L2-normalise the slice embeddings [H; NF]."""
    ema_decay: float = 0.999
    """EMA ceiling a_max [P value; H warm-up formula of docs/methods/README.md §0]."""
    ema_head: bool = True
    """Teacher projection head = EMA copy of the student head [H]; false: the student head without gradients."""
    student_noise_unlabeled: bool = True
    """Student sees x_U + η_s on the unlabeled samples [P noise on both; H distribution]."""
    con_target: str = "prob"
    """Consistency on sigmoid probabilities only [H]; the only supported value."""
    ramp_mode: str = "stepped"
    """`stepped`: R(t) = r(⌊t/150⌋, 40) [H]; `continuous`: Ψ(t) = exp(−5(1 − t/6000)²) [P form]."""
    ramp: tuple[int, float] = (150, 40.0)
    """(iterations per ramp epoch, ramp length in epochs) of R(t); t_max = their product [H]."""
    noise_std: float = 0.1
    """Std of η before clipping [H, UA-MT value]."""
    noise_clip: float = 0.2
    """Clip bound of η [H, UA-MT value]."""
    has_dropout: bool = True
    """Dropout3d(0.5) in student and teacher trunks during training [H, docs/methods/README.md §1.2]."""
    # -- ablation switches (the paper's ablation table; docs/methods/simcvd.md "Ablation switches") --
    sdm_input: bool = True
    """Projection heads see the boundary-aware volume x_U + q [P]; false: x_U alone ("w/o SDM" with use_sdm_loss)."""
    use_contrast: bool = True
    """L_contrast computed and added [P]; false: not computed ("w/o L_contrast")."""
    use_pd: bool = True
    """L_pd computed and added [P]; false: not computed ("w/o L_pd")."""
    use_sdm_loss: bool = True
    """α·L_sdm in L_sup [P]; false: not computed ("w/o L_sdm")."""
    head_pool_mode: str = "avg"
    """Per-slice pooling of the projection head: `avg` [P] or `max` ("w/ adaptive max pooling")."""

    def __post_init__(self) -> None:
        if self.pd_reduction not in REDUCTIONS:
            raise ValueError(f"pd_reduction must be one of {REDUCTIONS}; got {self.pd_reduction!r}")
        if self.ramp_mode not in RAMP_MODES:
            raise ValueError(f"ramp_mode must be one of {RAMP_MODES}; got {self.ramp_mode!r}")
        if self.head_pool_mode not in POOL_MODES:
            raise ValueError(f"head_pool_mode must be one of {tuple(POOL_MODES)}; got {self.head_pool_mode!r}")
        if self.con_target != "prob":
            raise ValueError(f"con_target must be 'prob'; got {self.con_target!r}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1]; got {self.ema_decay}")
        if self.tau <= 0 or self.pd_temperature <= 0:
            raise ValueError(f"tau and pd_temperature must be > 0; got {self.tau}, {self.pd_temperature}")
        if self.ramp[0] < 1 or self.ramp[1] < 0:
            raise ValueError(f"ramp must be (iterations per epoch >= 1, length >= 0); got {self.ramp}")


def ramp_value(cfg: Config, it: int) -> float:
    """R(t) for the configured ramp mode (1.0 at full strength)."""
    if cfg.ramp_mode == "stepped":
        return consistency_weight(it, 1.0, *cfg.ramp)
    return sigmoid_rampup(it, cfg.ramp[0] * cfg.ramp[1])


# -- the method's own numerics -----------------------------------------------------------------------------------------
REDUCTIONS = ("mean", "sum")


def info_nce(anchors: torch.Tensor, candidates: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-anchor InfoNCE with the positive of anchor i at candidate i; every candidate is in the denominator.

    ℓ_i = −log[exp(a_i·c_i/τ) / Σ_k exp(a_i·c_k/τ)]. Memory: one `[N, N]` similarity matrix.

    Args:
        anchors: `[N, D]` embeddings (normally L2-normalised).
        candidates: `[N, D]` embeddings; row i is the positive of anchor i.
        tau: temperature τ > 0.

    Returns:
        `[N]` losses.
    """
    if anchors.ndim != 2 or anchors.shape != candidates.shape:
        raise ValueError(
            f"anchors and candidates must both be [N, D]; got {tuple(anchors.shape)}, {tuple(candidates.shape)}"
        )
    if tau <= 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    logits = anchors @ candidates.T / tau
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device), reduction="none")


def symmetric_info_nce(h_s: torch.Tensor, h_t: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over positives of ½·(ℓ_{t→s} + ℓ_{s→t}) (SimCVD L_contrast, `docs/methods/simcvd.md` row 8).

    Args:
        h_s: student embeddings `[N, D]`; h_t: teacher embeddings `[N, D]`, row i of each forms a positive pair.
        tau: temperature.

    Returns:
        Scalar loss. Memory: one `[N, N]` matrix (N = 160 slices for LA, 192 for Pancreas).
    """
    return 0.5 * (info_nce(h_t, h_s, tau) + info_nce(h_s, h_t, tau)).mean()


def pairwise_distillation(
    v_s: torch.Tensor, v_t: torch.Tensor, temperature: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """SimCVD pair-wise distillation: softmax over the teacher positions of the same volume of cos(v^s_j, v^t_k)/T.

    ℓ(i, j) = −log[exp(cos(v^s_ij, v^t_ij)/T) / Σ_k exp(cos(v^s_ij, v^t_ik)/T)] (`docs/methods/simcvd.md` row 9).

    Args:
        v_s, v_t: feature maps `[B, C, *spatial]` (P = prod(spatial) positions per volume).
        temperature: T (1.0: the paper's "no temperature").
        reduction: "mean" over positions and volumes, or "sum" over positions then mean over volumes (paper).

    Returns:
        Scalar loss. Memory: `[B, P, P]` (P = 245 for LA, 216 for Pancreas).
    """
    if v_s.shape != v_t.shape or v_s.ndim < 3:
        raise ValueError(f"v_s and v_t must be equal [B, C, ...] shapes; got {tuple(v_s.shape)}, {tuple(v_t.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    a = F.normalize(v_s.flatten(2), dim=1)  # [B, C, P]
    b = F.normalize(v_t.flatten(2), dim=1)
    logits = torch.einsum("bcj,bck->bjk", a, b) / temperature  # [B, P, P]
    target = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
    loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # [B, P]
    return loss.mean() if reduction == "mean" else loss.sum(dim=1).mean()


#: Per-slice pooling of the SimCVD projection head.
POOL_MODES = {"avg": F.adaptive_avg_pool2d, "max": F.adaptive_max_pool2d}


class SliceProjectionHead(nn.Module):
    """SimCVD boundary-aware slice projection head (`docs/methods/simcvd.md` row 7).

    AlphaDropout(p) on the volume, AdaptiveAvgPool2d(pool × pool) per z-slice (or AdaptiveMaxPool2d, the paper's
    ablation), MLP pool² → hidden… → out with ReLU between layers, optional L2 normalisation.

    Args:
        pool: pooled (x, y) side (128 in the paper).
        hidden: hidden widths of the MLP.
        out: embedding size.
        dropout: AlphaDropout probability.
        l2_normalise: L2-normalise the embeddings.
        pool_mode: "avg" (the paper's head) or "max".
    """

    def __init__(
        self,
        pool: int = 128,
        hidden: tuple[int, ...] = (256, 256),
        out: int = 128,
        dropout: float = 0.1,
        l2_normalise: bool = True,
        pool_mode: str = "avg",
    ) -> None:
        super().__init__()
        if pool < 1 or out < 1 or any(h < 1 for h in hidden) or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"need pool, out, hidden >= 1 and dropout in [0, 1); got {pool}, {out}, {hidden}, {dropout}"
            )
        if pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode must be one of {tuple(POOL_MODES)}; got {pool_mode!r}")
        self.pool, self.l2_normalise, self.pool_fn = pool, l2_normalise, POOL_MODES[pool_mode]
        self.dropout = nn.AlphaDropout(dropout)
        widths = [pool * pool, *hidden, out]
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers += [nn.Linear(w_in, w_out)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
        self.mlp = nn.Sequential(*layers)

    def forward(self, vol: torch.Tensor) -> torch.Tensor:
        """Embeddings `[B, Z, out]` of every z-slice of `vol` `[B, 1, X, Y, Z]`."""
        if vol.ndim != 5 or vol.shape[1] != 1:
            raise ValueError(f"vol must be [B, 1, X, Y, Z]; got {tuple(vol.shape)}")
        b, _, x, y, z = vol.shape
        slices = self.dropout(vol)[:, 0].permute(0, 3, 1, 2).reshape(b * z, 1, x, y)
        pooled = self.pool_fn(slices, self.pool).flatten(1)  # [B·Z, pool²]
        h = self.mlp(pooled).view(b, z, -1)
        return F.normalize(h, dim=-1) if self.l2_normalise else h


@register_method("simcvd")
class SimCVD(Method):
    VERSION = 1
    Config = Config
    output_kind = "sigmoid"
    needs_unlabeled = True

    def __init__(self, cfg: Config, build_net: BuildNet, device: torch.device) -> None:
        super().__init__(cfg, build_net, device)
        self.net = build_net("vnet_sdf", n_classes=1, has_dropout=cfg.has_dropout).to(device)
        self.teacher = freeze_teacher(build_net("vnet_sdf", n_classes=1, has_dropout=cfg.has_dropout).to(device))
        self.head = self._build_head().to(device)
        if cfg.ema_head:
            self.teacher_head = freeze_teacher(self._build_head().to(device))

    def _build_head(self) -> SliceProjectionHead:
        c = self.cfg
        return SliceProjectionHead(
            c.head_pool, tuple(c.head_hidden), c.head_out, c.head_dropout, c.l2_normalise, c.head_pool_mode
        )

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": [*self.net.parameters(), *self.head.parameters()]}

    def label_transforms(self) -> dict:
        """The SDM of each labeled patch, computed in the loader workers; arrives as batch.extras["sdf"]."""
        return {"sdf": signed_distance_map}

    def _supervised(self, out: dict, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        n_l, logits = batch.n_labeled, out["logits"][: batch.n_labeled, 0]
        l_bce = F.binary_cross_entropy_with_logits(logits, batch.y.float())
        l_dice = dice_fg(torch.sigmoid(logits), batch.y)
        sup, logs = 0.5 * (l_bce + l_dice), {"loss/bce": l_bce.item(), "loss/dice": l_dice.item()}
        if self.cfg.use_sdm_loss:
            l_sdf = F.mse_loss(out["sdm"][:n_l, 0], batch.extras["sdf"])
            sup, logs["loss/sdf"] = sup + self.cfg.alpha_sdf * l_sdf, l_sdf.item()
        return sup, logs

    def _contrast(self, x_u: torch.Tensor, sdm_s: torch.Tensor, sdm_t: torch.Tensor) -> torch.Tensor:
        """L_contrast: symmetric InfoNCE of the student's and teacher's slice embeddings (boundary-aware input
        x_U + q unless `sdm_input` is off); the teacher side without gradients."""
        cfg = self.cfg
        teacher_head = self.teacher_head if cfg.ema_head else self.head
        with torch.no_grad():
            h_t = teacher_head(x_u + sdm_t if cfg.sdm_input else x_u).flatten(0, 1)
        h_s = self.head(x_u + sdm_s if cfg.sdm_input else x_u).flatten(0, 1)  # [B_U·Z, D]
        return symmetric_info_nce(h_s, h_t, cfg.tau)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        cfg, n_l = self.cfg, batch.n_labeled
        if "sdf" not in batch.extras:
            raise KeyError("simcvd needs batch.extras['sdf'] [n_labeled, X, Y, Z] (from label_transforms)")
        if batch.x_u.shape[0] == 0:
            raise ValueError("simcvd needs unlabeled samples in the batch (n_labeled < batch size)")
        require_labels(batch.y)
        x_u = batch.x_u
        x_u_s = add_input_noise(x_u, cfg.noise_std, cfg.noise_clip) if cfg.student_noise_unlabeled else x_u
        out = self.net.forward_features(torch.cat([batch.x_l, x_u_s]))
        with torch.no_grad():
            out_t = self.teacher.forward_features(add_input_noise(x_u, cfg.noise_std, cfg.noise_clip))
        sup, sup_logs = self._supervised(out, batch)
        terms = {}  # name: (weight, loss), summed in this order; a switched-off term is never computed
        if cfg.use_contrast:
            terms["contrast"] = cfg.lambda_contrast, self._contrast(x_u, out["sdm"][n_l:], out_t["sdm"])
        if cfg.use_pd:
            l_pd = pairwise_distillation(
                out["feat_bottleneck"][n_l:], out_t["feat_bottleneck"], cfg.pd_temperature, cfg.pd_reduction
            )
            terms["pd"] = cfg.beta_pd, l_pd
        terms["con"] = cfg.gamma_con, F.mse_loss(torch.sigmoid(out["logits"][n_l:]), torch.sigmoid(out_t["logits"]))
        weighted = [weight * term for weight, term in terms.values()]
        unsup = functools.reduce(operator.add, weighted)
        r = ramp_value(cfg, progress.it)
        logs = {"loss/sup": sup.item(), **sup_logs, **{f"loss/{k}": t.item() for k, (_, t) in terms.items()}}
        return StepOutput(loss=sup + r * unsup, logs={**logs, "w/ramp": r})

    def after_optimizer_step(self, progress: Progress) -> None:
        update_ema(self.teacher, self.net, progress.it, self.cfg.ema_decay)
        if self.cfg.ema_head:
            update_ema(self.teacher_head, self.head, progress.it, self.cfg.ema_decay)

    def eval_network(self) -> nn.Module:
        """The segmentation head of the student; SDM head, teacher and projection heads are discarded."""
        return SegmentationHead(self.net)
