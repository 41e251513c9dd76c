"""mean_teacher: V-Net student and an EMA teacher with a softmax-MSE consistency loss on the unlabeled samples.

Paper: Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017 (arXiv 1703.01780), in the LA
convention of UA-MT (Yu et al., MICCAI 2019, arXiv 1907.07034): UA-MT without the uncertainty mask.
Reference code: yulequan/UA-MT @ 88ed29ad794f877122e542a7fa9505a76fa83515,
`code/train_LA_meanteacher_certainty_unlabel.py` (the uncertainty lines left out; docs/methods/mean_teacher.md).

Implementation details (permalinks: github.com/yulequan/UA-MT/blob/88ed29a/code/<file>#L<n>):
1. Student and teacher: VNet(n_classes=2, batchnorm, has_dropout=True), built separately, so the teacher starts
   from its own random initialisation [train_LA_meanteacher_certainty_unlabel.py#L87-L97].
2. Teacher parameters take no gradients (`param.detach_()`, #L91-L93); the teacher runs in train mode, dropout on
   and BatchNorm batch statistics (#L120) [harness.numerics.ema.freeze_teacher; the loop calls train() on every module].
3. EMA after every optimiser step: a_t = min(1 − 1/(t + 1), 0.99), parameters only (#L68-L72, #L182, `--ema_decay`
   #L36) [harness.numerics.ema.update_ema with progress.it].
4. Teacher input noise ξ(x) = x + clip(0.1·N(0, 1), −0.2, 0.2), drawn before the student's forward (#L146-L150)
   [harness.numerics.losses.add_input_noise, torch RNG only].
5. The student sees the whole clean batch of 4 (BatchNorm statistics over labeled + unlabeled, #L148); the teacher
   sees ξ(x_U), the 2 unlabeled samples (#L144-L150).
6. Supervised loss 0.5·(CE + Dice_fg) on the 2 labeled samples (#L166-L169) [harness.numerics.losses.supervised_loss].
7. Consistency: mean over the unlabeled samples, voxels and both channels of (softmax(student) − softmax(teacher))²
   (`losses.softmax_mse_loss`, utils/losses.py#L56-L69) [harness.numerics.losses.softmax_mse].
8. Weight λ(t) = 0.1·r(⌊t/150⌋, 40) with the 0-based step t (#L64-L66, #L171; ramps.py#L19-L26)
   [harness.numerics.ramps.consistency_weight].
9. Test: the student, softmax, argmax (`eval_network` = student).

Known deviations: none in the arithmetic. `consistency_on: all` (the sibling script
`train_LA_meanteacher_certainty.py` #L144-L168: teacher on ξ(x) for all 4 samples, consistency on all 4) is a
configuration option [H]. Teacher parameters have requires_grad=False instead of the reference's `detach_()` (the
same arithmetic).
Sanity numbers (`harness/report/published.csv`, SimCVD Table I, LA): MT Dice 88.42 (16 labels), 84.24 (8 labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.method import Batch, BuildNet, Method, Progress, StepOutput, register_method
from harness.numerics.ema import freeze_teacher, update_ema
from harness.numerics.losses import add_input_noise, softmax_mse, supervised_loss
from harness.numerics.ramps import consistency_weight

CONSISTENCY_ON = ("unlabeled", "all")


@dataclass(frozen=True)
class Config:
    """Mean Teacher hyperparameters; defaults are the UA-MT repository's values."""

    ema_decay: float = 0.99
    """EMA ceiling a_max [C: train_LA_meanteacher_certainty_unlabel.py#L36@88ed29a `--ema_decay 0.99`]."""
    consistency_weight: float = 0.1
    """Full-strength consistency weight w [C: same file #L38 `--consistency 0.1`]."""
    ramp: tuple[int, float] = (150, 40.0)
    """(iterations per ramp epoch, ramp length in epochs): λ = w·r(t // 150, 40) [C: same file #L171, #L39]."""
    consistency_on: str = "unlabeled"
    """`unlabeled` (main script, #L172) or `all` 4 samples (train_LA_meanteacher_certainty.py#L168) [H]."""
    noise_std: float = 0.1
    """Std of the teacher's input noise before clipping [C: same file #L146]."""
    noise_clip: float = 0.2
    """Clip bound of the teacher's input noise [C: same file #L146]."""
    has_dropout: bool = True
    """Dropout3d(0.5) in student and teacher during training [C: same file #L89]."""

    def __post_init__(self) -> None:
        if self.consistency_on not in CONSISTENCY_ON:
            raise ValueError(f"consistency_on must be one of {CONSISTENCY_ON}; got {self.consistency_on!r}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1]; got {self.ema_decay}")
        if self.ramp[0] < 1 or self.ramp[1] < 0:
            raise ValueError(f"ramp must be (iterations per epoch >= 1, length >= 0); got {self.ramp}")


@register_method("mean_teacher")
class MeanTeacher(Method):
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
            raise ValueError("mean_teacher needs unlabeled samples in the batch (n_labeled < number of cases)")
        on_all = cfg.consistency_on == "all"
        teacher_in = add_input_noise(batch.x if on_all else batch.x_u, cfg.noise_std, cfg.noise_clip)
        logits = self.net(batch.x)
        with torch.no_grad():
            teacher_logits = self.teacher(teacher_in)
        sup, logs = supervised_loss(logits[:n_l], batch.y)
        cons = softmax_mse(logits if on_all else logits[n_l:], teacher_logits).mean()
        weight = consistency_weight(progress.it, cfg.consistency_weight, *cfg.ramp)
        loss = sup + weight * cons
        return StepOutput(loss=loss, logs={"loss/sup": sup.item(), **logs, "loss/cons": cons.item(), "w/cons": weight})

    def after_optimizer_step(self, progress: Progress) -> None:
        update_ema(self.teacher, self.net, progress.it, self.cfg.ema_decay)
