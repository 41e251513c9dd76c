"""ad_mt: alternate diverse teaching: one V-Net student, two EMA teachers updated in random alternating periods.

Paper: Zhao, Wang, Long, Wang, Li, Chen, Zhou, Yuan, "Alternate Diverse Teaching for Semi-supervised Medical Image
Segmentation", ECCV 2024 (arXiv 2311.17325).
Reference code: ZhenZHAO/AD-MT @ 03ef84c79ae4db884133293cba647c571dbce25b, `code/train_post_3d_aut.py` with
`cfgs/config_3d_la_aut.yml` / `cfgs/config_3d_pan_aut.yml` (docs/methods/ad_mt.md). Line numbers are of
train_post_3d_aut.py at that commit unless another file is named.

Implementation details:
1. Student and teachers A (`ema_model`), B (`ema_model_another`): three VNet(n_classes=2, batchnorm,
   has_dropout=True) built one after the other, each with its own random init; teacher parameters take no gradient
   (#L69-L77, #L85-L87; networks/net_factory.py#L13-L15) [harness.numerics.ema.freeze_teacher].
2. Random periodic alternation: the state "A" lasts r_0 iterations, then "B" lasts r_1, "A" r_2, ...; every r_k is
   uniform in {1..P}, P = 19 (LA) / 14 (Pancreas) (#L154-L156, #L357; train_utils.py#L12-L60; la yml#L39-L40)
   [`Alternation`; r_k from numpy `default_rng([seed, k])`, seed = torch.initial_seed(), see deviations].
3. Teacher modes within an iteration: the teacher of the current period in train mode (dropout, batch statistics,
   its BN running stats move), the other in eval mode (#L206-L212); both predict on the weak unlabeled images
   under no_grad (#L215-L219).
4. Teacher combination (conflict-combating): p_k = softmax, H_k = −Σ p_k·log2(p_k + 1e−10), w_A = e^{−H_A} /
   (e^{−H_A} + e^{−H_B}), p̄ = w_A·p_A + (1 − w_A)·p_B renormalised; pseudo label argmax p̄, confidence max p̄,
   teacher conflict K = (argmax p_A ≠ argmax p_B) (#L221-L240) [`combine_teachers`; `ensemble: mean` is the
   pre-8cf8dec formula, i.e. (p_A + p_B)/2, which produced the released logs].
5. Student views of the unlabeled pair: in "A" periods the intensity-strong view (brightness/contrast with p 0.8,
   clipped Gaussian noise with p 0.2, per sample; dataloaders/dataset_3d.py#L93-L130, #L235-L280,
   randcolor.py#L12-L62) [`intensity_augment`, torch RNG]; in "B" periods 3D CutMix of the weak views with
   λ ~ Beta(4, 4), box side int(S·sqrt(1 − λ)) per axis, centres in [int(S/8), S), pasted from sample perm[i] at
   the same coordinates (perm = randperm, so a sample may paste from itself); image, pseudo label, confidence and
   K are mixed (#L259-L276; dataloaders/mixaugs.py#L115-L147, #L181-L215) [`cutmix_boxes`, `cutmix`].
6. One student forward on cat(x_L, x_U weak, x_U strong-or-mixed), a batch of 6 (#L281-L284).
7. Student override: where K, the student's weak-view label (not mixed) ≠ the pseudo label and its confidence is
   strictly higher, label and confidence become the student's (#L287, #L306-L309; train_utils.py#L144-L180,
   "pixel_confidence", la yml#L32, #L38) [`student_override`].
8. L_unsup = CE(student strong/mixed logits, pseudo label), mean over voxels with confidence ≥ 0.8 (#L333-L335;
   the conflict-weight split #L310-L329 is skipped because the weight is 1.0, la yml#L41) [`unsupervised_ce`].
9. L_sup = ½·(CE + ½·(D_0 + D_1)) on the labeled samples, D_c the batch-global Dice loss of class c with squared
   denominators and smooth 1e−5 (#L290-L294; utils/losses.py#L157-L193) [`supervised_two_class_dice`].
10. L = L_sup + 2.0·r(⌊t/150⌋, 40)·L_unsup (#L342-L343; la yml#L26-L27) [harness.numerics.ramps].
11. After the optimiser step only the teacher of the current period is updated: g = ⌊t/2⌋, α = 0 if g < 40, else
    min(1 − 1/(g − 40 + 1), 0.99); parameters AND buffers (BN running mean/var, num_batches_tracked) blended
    (#L40-L53, #L350-L357) [`ema_alpha`, `update_ema_with_buffers`].
12. Test: the student (the released test scripts load the best student checkpoint, test_3d.sh#L21).

Known deviations: the alternation periods come from numpy `default_rng([seed, k])` with seed = torch.initial_seed()
(the run seed the loop gave torch before building the method), not from the shared global numpy stream, so the
schedule is a pure function of (run seed, iteration) and resume is exact [H]; augmentation and CutMix draw from
torch's RNG inside the method (the reference draws them with numpy in the loader workers and the main process) [H];
if no voxel passes the threshold L_unsup = 0 (the reference's mean over an empty set is NaN) [H]; the brightness/
contrast step skips a constant patch (the reference divides by max − min = 0) [H]; integer buffers keep their dtype
in the EMA, rounded (the reference turns num_batches_tracked into a float; unused by momentum BatchNorm) [H]; the
conflict-weight split (weight ≠ 1) is not implemented. Protocol level (config): 15000 iterations, poly LR, last
checkpoint, no largest-connected-component at test time (the reference selects the best student on the test set and
applies it).
Sanity numbers (training-logs/performance_*.txt, best student, with LCC): LA Dice 89.63 (4 labels), 90.58 (8);
Pancreas 80.23 (6), 82.61 (12).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.method import Batch, BuildNet, Method, Progress, StepOutput, register_method
from harness.numerics.ema import freeze_teacher
from harness.numerics.losses import dice_fg, require_labels
from harness.numerics.ramps import consistency_weight

ENSEMBLES = ("entropy", "mean")
#: The reference's ignore label for voxels below the confidence threshold (#L335).
IGNORE = -100


@dataclass(frozen=True)
class Config:
    """AD-MT hyperparameters; defaults are the released LA config (cfgs/config_3d_la_aut.yml@03ef84c)."""

    alternation_period: int = 19
    """P: each period lasts U{1..P} iterations [C: la yml#L40 `alt_param_updating_period_iters: 19`; pan yml: 14]."""
    ema_decay: float = 0.99
    """EMA ceiling of both teachers [C: la yml#L22 `ema_decay`; train_post_3d_aut.py#L45]."""
    ema_warmup: int = 40
    """R: α = 0 while ⌊t/2⌋ < R [C: train_post_3d_aut.py#L42-L45 reuses la yml#L27 `consistency_rampup: 40`]."""
    conf_threshold: float = 0.8
    """Pseudo labels with confidence ≥ this enter L_unsup [C: la yml#L25; train_post_3d_aut.py#L333-L334]."""
    consistency_weight: float = 2.0
    """λ_max of L_unsup [C: la yml#L26 `consistency: 2.0`]."""
    ramp: tuple[int, float] = (150, 40.0)
    """(iterations per ramp epoch, ramp length): λ = 2·r(t // 150, 40) [C: train_post_3d_aut.py#L342; la yml#L27]."""
    ensemble: str = "entropy"
    """`entropy` (released, #L228-L237) or `mean` ((p_A + p_B)/2: the formula before commit 8cf8dec, which the
    released training logs ran) [C: git show 8cf8dec]."""
    color_prob: float = 0.8
    """Probability of the brightness/contrast step of the strong view [C: dataloaders/dataset_3d.py#L94, #L98-L100]."""
    brightness_limit: float = 0.5
    """b ~ U(−0.5, 0.5): n ← clip(n + b·mean(n), 0, 1) [C: dataset_3d.py#L98, #L268; randcolor.py#L49-L62]."""
    contrast_limit: float = 0.5
    """a = 1 + U(−0.5, 0.5): n ← a·n [C: dataset_3d.py#L99, #L267]."""
    noise_prob: float = 0.2
    """Probability of the Gaussian-noise step of the strong view [C: dataset_3d.py#L94, #L101-L102, #L243]."""
    noise_sigma: tuple[float, float] = (0.1, 1.0)
    """σ ~ U(0.1, 1.0); noise = clip(σ·N(0, 1), −2σ, 2σ) per voxel [C: dataset_3d.py#L101, #L241-L246]."""
    cutmix_beta: float = 4.0
    """λ ~ Beta(4, 4) of the CutMix box [C: dataloaders/mixaugs.py#L193]."""
    has_dropout: bool = True
    """Dropout3d(0.5) in the student and both teachers [C: networks/net_factory.py#L13-L15]."""

    def __post_init__(self) -> None:
        if self.alternation_period < 1:
            raise ValueError(f"alternation_period must be >= 1; got {self.alternation_period}")
        if not 0.0 <= self.ema_decay <= 1.0 or self.ema_warmup < 0:
            raise ValueError(f"need 0 <= ema_decay <= 1 and ema_warmup >= 0; got {self.ema_decay}, {self.ema_warmup}")
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}; got {self.ensemble!r}")
        if self.ramp[0] < 1 or self.ramp[1] < 0:
            raise ValueError(f"ramp must be (iterations per epoch >= 1, length >= 0); got {self.ramp}")
        lo, hi = self.noise_sigma
        if not 0.0 <= lo <= hi or self.cutmix_beta <= 0:
            raise ValueError(f"need 0 <= noise_sigma[0] <= noise_sigma[1] and cutmix_beta > 0; got {self}")


# -- alternation schedule ------------------------------------------------------------------------------------------
def period_length(seed: int, k: int, max_period: int) -> int:
    """r_k ~ U{1..P}: the length of the k-th period (k = 0, 1, ...), a pure function of (seed, k)."""
    return int(np.random.default_rng([seed, k]).integers(1, max_period, endpoint=True))


class Alternation:
    """Which teacher an iteration belongs to: periods of r_0, r_1, ... iterations, teacher A in the even ones.

    The reference's `AlternateUpdate` (train_utils.py#L12-L60) flips a flag after r iterations and draws the next r;
    here the period ends are a cache of cumulative sums of `period_length`, so any iteration (a resumed run's first)
    is answered without replaying the run.
    """

    def __init__(self, seed: int, max_period: int) -> None:
        self.seed, self.max_period = seed, max_period
        self.ends: list[int] = []  # ends[k]: first iteration after period k

    def period(self, it: int) -> int:
        """Index k of the period holding 0-based iteration `it`."""
        while not self.ends or self.ends[-1] <= it:
            start = self.ends[-1] if self.ends else 0
            self.ends.append(start + period_length(self.seed, len(self.ends), self.max_period))
        return bisect.bisect_right(self.ends, it)

    def teacher_a(self, it: int) -> bool:
        """True when iteration `it` belongs to teacher A (the reference's flag, True at the start)."""
        return self.period(it) % 2 == 0


# -- EMA of parameters and buffers ---------------------------------------------------------------------------------
def ema_alpha(it: int, warmup: int = 40, decay: float = 0.99) -> float:
    """α(t): g = ⌊t/2⌋; 0 while g < warmup, then min(1 − 1/(g − warmup + 1), decay) (#L40-L45, called with t//2)."""
    g = it // 2
    if g < warmup:
        return 0.0
    return min(1.0 - 1.0 / (g - warmup + 1), decay)


@torch.no_grad()
def update_ema_with_buffers(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """θ_T ← α·θ_T + (1 − α)·θ_S for every parameter and every buffer (BN running mean/var, num_batches_tracked),
    zipped in module order (#L47-L53). Integer buffers keep their dtype (the blend is rounded) [H]."""
    pairs = [
        *zip(teacher.parameters(), student.parameters(), strict=True),
        *zip(teacher.buffers(), student.buffers(), strict=True),
    ]
    for t, s in pairs:
        if t.shape != s.shape:
            raise ValueError(f"teacher tensor {tuple(t.shape)} differs from student {tuple(s.shape)}")
        if t.is_floating_point():
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        else:
            t.copy_(torch.round(t * alpha + s * (1.0 - alpha)))


# -- teachers' pseudo labels ---------------------------------------------------------------------------------------
def entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """H = −Σ_c p_c·log2(p_c + 1e−10) over dim 1 (#L228-L229): `[B, C, ...]` → `[B, ...]`."""
    return -torch.sum(p * torch.log2(p + 1e-10), dim=1)


def combine_teachers(
    p_a: torch.Tensor, p_b: torch.Tensor, ensemble: str = "entropy"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teachers' pseudo label, its confidence and their conflict mask (#L221-L240).

    Args:
        p_a, p_b: softmax outputs `[B, C, X, Y, Z]` of teachers A and B.
        ensemble: "entropy" (w_A = sigmoid(H_B − H_A) per voxel) or "mean" (w_A = ½, the pre-8cf8dec formula).

    Returns:
        (label `[B, X, Y, Z]` int64, confidence `[B, X, Y, Z]`, conflict `[B, X, Y, Z]` bool = argmaxes differ).
    """
    conflict = p_a.argmax(dim=1) != p_b.argmax(dim=1)
    if ensemble == "entropy":
        e_a, e_b = torch.exp(-entropy_bits(p_a)), torch.exp(-entropy_bits(p_b))
        w_a = (e_a / (e_a + e_b)).unsqueeze(1)
    else:
        w_a = torch.full_like(p_a[:, :1], 0.5)
    p_bar = w_a * p_a + (1 - w_a) * p_b
    p_bar = p_bar / p_bar.sum(dim=1, keepdim=True)  # the reference's p̄^(1/T) renormalisation, T = 1
    confidence, label = torch.max(p_bar, dim=1)
    return label, confidence, conflict


def student_override(
    label: torch.Tensor, confidence: torch.Tensor, conflict: torch.Tensor, p_student: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the teachers conflict, the student's weak-view label differs and is strictly more confident, take the
    student's label and confidence ("pixel_confidence", train_utils.py#L144-L180 with the teacher-conflict mask).

    Returns:
        (label, confidence, replaced mask), new tensors.
    """
    s_conf, s_label = torch.max(p_student, dim=1)
    replace = (s_label != label) & conflict & (s_conf > confidence)
    return torch.where(replace, s_label, label), torch.where(replace, s_conf, confidence), replace


def unsupervised_ce(logits: torch.Tensor, label: torch.Tensor, confidence: torch.Tensor, threshold: float):
    """CE over the voxels with confidence ≥ threshold, mean over them (#L333-L335); 0 when none passes [H].

    Returns:
        (loss, fraction of voxels kept as a tensor).
    """
    keep = confidence >= threshold
    target = torch.where(keep, label, torch.full_like(label, IGNORE))
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")
    n_kept = keep.sum()
    return total / n_kept.clamp(min=1), n_kept.float() / keep.numel()


# -- strong view and CutMix ----------------------------------------------------------------------------------------
def intensity_augment(x: torch.Tensor, cfg: Config) -> torch.Tensor:
    """The strong view of each sample of `x` `[B, 1, X, Y, Z]` (dataset_3d.py#L110-L113, torch RNG).

    Per sample, in the reference's draw order: a = 1 + U(−c, c), b = U(−b_l, b_l), u; if u < color_prob, with m, M
    the patch's min and max: n = (x − m)/(M − m), n = clip(a·n + b·mean(a·n), 0, 1), x = n·(M − m) + m. Then
    σ = U(σ_lo, σ_hi), u'; if u' < noise_prob, x += clip(σ·N(0, 1), −2σ, 2σ) per voxel.
    """
    lo, hi = cfg.noise_sigma
    out = []
    for sample in x:
        u = torch.rand(3, dtype=torch.float64).tolist()
        a = 1.0 + cfg.contrast_limit * (2.0 * u[0] - 1.0)
        b = cfg.brightness_limit * (2.0 * u[1] - 1.0)
        m, big_m = sample.min(), sample.max()
        if u[2] < cfg.color_prob and big_m > m:  # a constant patch is left alone [H]
            n = (sample - m) / (big_m - m) * a
            sample = torch.clamp(n + b * n.mean(), 0.0, 1.0) * (big_m - m) + m
        v = torch.rand(2, dtype=torch.float64).tolist()
        sigma = lo + (hi - lo) * v[0]
        if v[1] < cfg.noise_prob:
            sample = sample + torch.clamp(sigma * torch.randn_like(sample), -2.0 * sigma, 2.0 * sigma)
        out.append(sample)
    return torch.stack(out)


Box = tuple[int, int, int, int, int, int]


def cutmix_boxes(size: tuple[int, int, int], lam: float, centres: torch.Tensor) -> list[Box]:
    """Per-sample boxes (x1, x2, y1, y2, z1, z2) of `rand_bbox_3d` (mixaugs.py#L115-L147).

    Args:
        size: the patch (W, H, D).
        lam: λ; every side is int(S·sqrt(1 − λ)) (the same ratio on all three axes).
        centres: `[B, 3]` integer centres (cx, cy, cz).
    """
    ratio = math.sqrt(1.0 - lam)
    sides = [int(s * ratio) for s in size]
    boxes = []
    for c in centres.tolist():
        box = []
        for centre, side, s in zip(c, sides, size, strict=True):
            box += [min(max(centre - side // 2, 0), s), min(max(centre + side // 2, 0), s)]
        boxes.append(tuple(box))
    return boxes


def cutmix(tensors: list[torch.Tensor], perm: torch.Tensor, boxes: list[Box]) -> list[torch.Tensor]:
    """Each tensor's sample i with its box filled from sample perm[i] at the same coordinates (mixaugs.py#L196-L211).

    `tensors` are `[B, C, X, Y, Z]` images or `[B, X, Y, Z]` maps; the sources are the unmixed inputs.
    """
    out = []
    for t in tensors:
        mixed = t.clone()
        for i, (x1, x2, y1, y2, z1, z2) in enumerate(boxes):
            j = int(perm[i])
            mixed[i, ..., x1:x2, y1:y2, z1:z2] = t[j, ..., x1:x2, y1:y2, z1:z2]
        out.append(mixed)
    return out


def draw_cutmix(n: int, size: tuple[int, int, int], beta: float) -> tuple[torch.Tensor, float, torch.Tensor]:
    """The reference's draws, in its order, from torch's RNG: perm = randperm(n), λ ~ Beta(β, β), then the centres
    cx, cy, cz each uniform in [int(S/8), S) (mixaugs.py#L134-L136, #L189-L193)."""
    perm = torch.randperm(n)
    conc = torch.tensor([beta], dtype=torch.float64)
    lam = float(torch.distributions.Beta(conc, conc).sample())
    centres = torch.stack([torch.randint(int(s / 8), s, (n,)) for s in size], dim=1)
    return perm, lam, centres


# -- supervised loss -----------------------------------------------------------------------------------------------
def supervised_two_class_dice(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """L_sup = ½·(CE + ½·(D_0 + D_1)): `DiceLoss(2)` averages the batch-global squared-denominator Dice loss of both
    classes (utils/losses.py#L157-L193; train_post_3d_aut.py#L290-L294)."""
    require_labels(target)
    logits = logits.float()
    ce = F.cross_entropy(logits, target)
    p = torch.softmax(logits, dim=1)
    dice = 0.5 * (dice_fg(p[:, 0], target == 0) + dice_fg(p[:, 1], target == 1))
    return 0.5 * (ce + dice), {"loss/ce": ce.item(), "loss/dice": dice.item()}


@register_method("ad_mt")
class ADMT(Method):
    VERSION = 1
    Config = Config
    output_kind = "softmax"
    needs_unlabeled = True

    def __init__(self, cfg: Config, build_net: BuildNet, device: torch.device) -> None:
        super().__init__(cfg, build_net, device)
        self.net = build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device)
        self.teacher_a = freeze_teacher(build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device))
        self.teacher_b = freeze_teacher(build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device))
        # the loop seeds torch with the run seed right before building the method (resume too): a pure function of it
        self._alternation = Alternation(torch.initial_seed(), cfg.alternation_period)

    def _active(self, it: int) -> tuple[nn.Module, nn.Module, bool]:
        """(teacher of iteration `it`, the other one, whether it is A)."""
        a = self._alternation.teacher_a(it)
        return (self.teacher_a, self.teacher_b, a) if a else (self.teacher_b, self.teacher_a, a)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        cfg, n_l = self.cfg, batch.n_labeled
        x_u = batch.x_u
        if x_u.shape[0] == 0:
            raise ValueError("ad_mt needs unlabeled samples in the batch (n_labeled < number of cases)")
        active, other, a_active = self._active(progress.it)
        active.train()
        other.eval()
        with torch.no_grad():
            p_a = torch.softmax(self.teacher_a(x_u).float(), dim=1)
            p_b = torch.softmax(self.teacher_b(x_u).float(), dim=1)
            label, conf, conflict = combine_teachers(p_a, p_b, cfg.ensemble)
        high_ratio = (conf >= cfg.conf_threshold).float().mean().item()
        if a_active:
            strong = intensity_augment(x_u, cfg)
        else:
            perm, lam, centres = draw_cutmix(x_u.shape[0], tuple(x_u.shape[2:]), cfg.cutmix_beta)
            boxes = cutmix_boxes(tuple(x_u.shape[2:]), lam, centres)
            strong, label, conf, conflict = cutmix([x_u, label, conf, conflict], perm, boxes)
        logits = self.net(torch.cat([batch.x, strong]))
        n_u = x_u.shape[0]
        logits_w, logits_s = logits[n_l : n_l + n_u], logits[n_l + n_u :]
        with torch.no_grad():
            label, conf, replaced = student_override(label, conf, conflict, torch.softmax(logits_w.float(), dim=1))
        sup, logs = supervised_two_class_dice(logits[:n_l], batch.y)
        unsup, kept = unsupervised_ce(logits_s, label, conf, cfg.conf_threshold)
        weight = consistency_weight(progress.it, cfg.consistency_weight, *cfg.ramp)
        loss = sup + weight * unsup
        pseudo = {
            "high_ratio": high_ratio,
            "kept": kept.item(),
            "conflict": conflict.float().mean().item(),
            "student": replaced.float().mean().item(),
        }
        logs = {
            "loss/sup": sup.item(),
            **logs,
            "loss/unsup": unsup.item(),
            "w/unsup": weight,
            "alt/teacher_a": float(a_active),
            **{f"pseudo/{k}": v for k, v in pseudo.items()},
        }
        return StepOutput(loss=loss, logs=logs)

    def after_optimizer_step(self, progress: Progress) -> None:
        active, _, _ = self._active(progress.it)
        update_ema_with_buffers(active, self.net, ema_alpha(progress.it, self.cfg.ema_warmup, self.cfg.ema_decay))
