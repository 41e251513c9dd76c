"""ua_mt: uncertainty-aware Mean Teacher: the consistency is kept only where the teacher's MC-dropout entropy is low.

Paper: Yu, Wang, Li, Fu, Heng, "Uncertainty-aware Self-ensembling Model for Semi-supervised 3D Left Atrium
Segmentation", MICCAI 2019 (arXiv 1907.07034).
Reference code: yulequan/UA-MT @ 88ed29ad794f877122e542a7fa9505a76fa83515,
`code/train_LA_meanteacher_certainty_unlabel.py` (the script named in the README; docs/methods/ua_mt.md).

Implementation details (line numbers #L<n> of that file at that commit unless another file is named):
1. Student, teacher, EMA (a_max 0.99, parameters only), teacher in train mode without gradients, input noise and
   the supervised loss 0.5·(CE + Dice_fg): exactly as `methods/mean_teacher.py` (#L36, #L68-L97, #L146-L169).
2. Consistency target: one teacher pass on ξ(x_U), drawn before the student's forward (#L146-L150).
3. Uncertainty: T = 8 stochastic teacher passes; x_U is repeated into a batch of 2·n_U (4), which runs T/2 = 4
   times with fresh noise and fresh dropout each (#L151-L158) [`_uncertainty`].
4. Softmax of each pass, mean over the T passes per voxel, entropy in nats with +1e-6 inside the log:
   u = −Σ_c p̄_c·log(p̄_c + 1e−6) (#L159-L162) [harness.numerics.losses.predictive_entropy].
5. Threshold τ(t) = (0.75 + 0.25·r(t, max_it))·ln 2 on the raw 0-based step t (#L173)
   [harness.numerics.ramps.uncertainty_threshold].
6. Mask 1[u < τ] (strict), the same for both channels; L_cons = Σ(mask·d)/(2·Σ mask + 1e−16) with
   d = (softmax(student) − softmax(teacher))² (#L172-L175) [harness.numerics.losses.masked_mse, softmax_mse].
7. Total = L_sup + 0.1·r(⌊t/150⌋, 40)·L_cons (#L171, #L176-L177) [harness.numerics.ramps.consistency_weight].
8. Test: the student, softmax, argmax.

Known deviations: none in the arithmetic; only torch's RNG is used for noise and dropout (as in the reference).
`consistency_on: all` (the sibling script `train_LA_meanteacher_certainty.py` #L144-L171: target, uncertainty and
consistency on all 4 samples) is a configuration option [H]. The reference's BraTS variant in SSL4MIS is not used.
Sanity numbers (`harness/report/published.csv`, LA): UA-MT Dice 88.88 (16 labels), 84.25 (8 labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.method import Batch, BuildNet, Method, Progress, StepOutput, register_method
from harness.numerics.ema import freeze_teacher, update_ema
from harness.numerics.losses import add_input_noise, masked_mse, predictive_entropy, softmax_mse, supervised_loss
from harness.numerics.ramps import consistency_weight, uncertainty_threshold

CONSISTENCY_ON = ("unlabeled", "all")


@dataclass(frozen=True)
class Config:
    """UA-MT hyperparameters; defaults are the reference script's values."""

    ema_decay: float = 0.99
    """EMA ceiling a_max [C: train_LA_meanteacher_certainty_unlabel.py#L36@88ed29a `--ema_decay 0.99`]."""
    consistency_weight: float = 0.1
    """Full-strength consistency weight w [C: same file #L38 `--consistency 0.1`]."""
    ramp: tuple[int, float] = (150, 40.0)
    """(iterations per ramp epoch, ramp length in epochs): λ = w·r(t // 150, 40) [C: same file #L171, #L39]."""
    consistency_on: str = "unlabeled"
    """`unlabeled` (this script) or `all` 4 samples (train_LA_meanteacher_certainty.py#L144-L171) [H]."""
    noise_std: float = 0.1
    """Std of the teacher's input noise before clipping [C: same file #L146, #L156]."""
    noise_clip: float = 0.2
    """Clip bound of the teacher's input noise [C: same file #L146, #L156]."""
    uncertainty_passes: int = 8
    """T stochastic teacher passes per sample (even: the batch is repeated twice, T/2 runs) [C: same file #L151]."""
    threshold_start: float = 0.75
    """τ(0) / ln 2 before the ramp: τ = (start + (end − start)·r(t, max_it))·ln 2 [C: same file #L173]."""
    threshold_end: float = 1.0
    """τ / ln 2 once t ≥ max_it (0.75 + 0.25) [C: same file #L173]."""
    has_dropout: bool = True
    """Dropout3d(0.5) in student and teacher (the source of the teacher's stochasticity) [C: same file #L89]."""

    def __post_init__(self) -> None:
        if self.consistency_on not in CONSISTENCY_ON:
            raise ValueError(f"consistency_on must be one of {CONSISTENCY_ON}; got {self.consistency_on!r}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1]; got {self.ema_decay}")
        if self.ramp[0] < 1 or self.ramp[1] < 0:
            raise ValueError(f"ramp must be (iterations per epoch >= 1, length >= 0); got {self.ramp}")
        if self.uncertainty_passes < 2 or self.uncertainty_passes % 2:
            raise ValueError(f"uncertainty_passes must be an even number >= 2; got {self.uncertainty_passes}")


@register_method("ua_mt")
class UAMT(Method):
    VERSION = 1
    Config = Config
    output_kind = "softmax"
    needs_unlabeled = True

    def __init__(self, cfg: Config, build_net: BuildNet, device: torch.device) -> None:
        super().__init__(cfg, build_net, device)
        self.net = build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device)
        self.teacher = freeze_teacher(build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device))

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        cfg, n_l = self.cfg, batch.n_labeled
        if batch.x_u.shape[0] == 0:
            raise ValueError("ua_mt needs unlabeled samples in the batch (n_labeled < number of cases)")
        on_all = cfg.consistency_on == "all"
        x_t = batch.x if on_all else batch.x_u
        teacher_in = add_input_noise(x_t, cfg.noise_std, cfg.noise_clip)
        logits = self.net(batch.x)
        with torch.no_grad():
            teacher_logits = self.teacher(teacher_in)
            uncertainty = self._uncertainty(x_t)
        sup, logs = supervised_loss(logits[:n_l], batch.y)
        threshold = uncertainty_threshold(progress.it, progress.max_it, cfg.threshold_start, cfg.threshold_end)
        mask = (uncertainty < threshold).float()
        cons = masked_mse(softmax_mse(logits if on_all else logits[n_l:], teacher_logits), mask)
        weight = consistency_weight(progress.it, cfg.consistency_weight, *cfg.ramp)
        loss = sup + weight * cons
        logs = {"loss/sup": sup.item(), **logs, "loss/cons": cons.item(), "w/cons": weight}
        return StepOutput(loss=loss, logs={**logs, "unc/threshold": threshold, "unc/kept": mask.mean().item()})

    def _uncertainty(self, x: torch.Tensor) -> torch.Tensor:
        """Entropy `[n, 1, X, Y, Z]` of the teacher's mean softmax over T noisy, dropout-on passes of `x` `[n, 1, ...]`.

        x is repeated into a batch of 2n and run T/2 times; pass k of sample j sits at row k·n + j, so the reshape to
        [T, n, C, ...] groups the T passes of each sample (reference #L152-L161).
        """
        x_r = x.repeat(2, 1, 1, 1, 1)
        cfg = self.cfg
        runs = [
            self.teacher(add_input_noise(x_r, cfg.noise_std, cfg.noise_clip))
            for _ in range(cfg.uncertainty_passes // 2)
        ]
        probs = torch.softmax(torch.cat(runs), dim=1)
        p_mean = probs.reshape(cfg.uncertainty_passes, x.shape[0], *probs.shape[1:]).mean(dim=0)
        return predictive_entropy(p_mean)

    def after_optimizer_step(self, progress: Progress) -> None:
        update_ema(self.teacher, self.net, progress.it, self.cfg.ema_decay)
