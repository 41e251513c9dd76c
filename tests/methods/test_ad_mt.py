"""ad_mt: alternation schedule, EMA, teacher combination, student override, CutMix, strong view, losses, by hand
(docs/methods/ad_mt.md; the numbers are the reference arithmetic of ZhenZHAO/AD-MT @ 03ef84c)."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from method_fakes import LinearLogits
from torch import nn

import methods.ad_mt as ad_mt
from harness.config import from_dict
from harness.method import Batch, Progress
from harness.method.build import resolve_run
from harness.nets import build_net
from harness.numerics.ramps import consistency_weight
from harness.run.folder import RunId
from harness.train.loop import Bookkeeping, train
from harness.workflow.grid import cell_params

CPU = torch.device("cpu")


def method(seed: int = 0, **overrides) -> ad_mt.ADMT:
    torch.manual_seed(seed)
    return ad_mt.ADMT(from_dict(ad_mt.Config, overrides, "ad_mt"), partial(build_net, n_filters=2), CPU)


def fixed_periods(monkeypatch, periods: list[int]) -> None:
    """r_0, r_1, ... = `periods` (then 1s) instead of the seeded draws."""
    monkeypatch.setattr(ad_mt, "period_length", lambda seed, k, p: periods[k] if k < len(periods) else 1)


class FixedProbs(nn.Module):
    """Logits log(p) for fixed class probabilities p `[n, 2, ...]` whatever the input (softmax gives p back)."""

    def __init__(self, p: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(()))
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.p) * self.a


def probs(*fg: float) -> torch.Tensor:
    """`[1, 2, n, 1, 1]` probabilities (1 − fg, fg) of n voxels."""
    f = torch.tensor(fg, dtype=torch.float32).reshape(1, 1, -1, 1, 1)
    return torch.cat([1 - f, f], dim=1)


# -- alternation schedule ----------------------------------------------------------------------------------------------
def test_periods_are_uniform_in_1_to_p_and_a_pure_function_of_seed_and_index():
    draws = [ad_mt.period_length(11, k, 3) for k in range(300)]
    assert set(draws) == {1, 2, 3}
    assert draws == [ad_mt.period_length(11, k, 3) for k in range(300)]
    assert draws != [ad_mt.period_length(12, k, 3) for k in range(300)]
    assert {ad_mt.period_length(5, k, 19) for k in range(2000)} == set(range(1, 20))
    assert all(ad_mt.period_length(5, k, 1) == 1 for k in range(20))  # P = 1: switch after every iteration


def test_switch_points_of_a_given_draw_sequence(monkeypatch):
    fixed_periods(monkeypatch, [3, 2, 1, 4])
    # a state lasts exactly r iterations: A A A B B A B B B B (the brief's generic rule)
    flags = [ad_mt.Alternation(0, 19).teacher_a(t) for t in range(10)]
    assert flags == [True, True, True, False, False, True, False, False, False, False]
    late = ad_mt.Alternation(0, 19)  # asked for iteration 9 first (a resumed run): the same answer
    assert late.teacher_a(9) is False and late.teacher_a(5) is True and late.ends == [3, 5, 6, 10]


def test_schedule_seed_is_the_run_seed_torch_was_given():
    a, b, c = method(seed=7), method(seed=7), method(seed=8)
    assert a._alternation.seed == 7 and c._alternation.seed == 8
    sched = [[m._active(t)[2] for t in range(400)] for m in (a, b, c)]
    assert sched[0] == sched[1] != sched[2]
    assert sched[0][0] is True and False in sched[0]  # teacher A first, then switches (P = 19)
    pinned = ad_mt.Alternation(1, 4)  # numpy's default_rng([1, k]) stream, which the resume test below relies on
    assert pinned.period(12) == 4 and pinned.ends == [2, 5, 8, 10, 13]


def run_config(root: Path, iterations: int = 6):
    config = {
        "datasets": {"tiny": {"labeled": [2]}},
        "data": {"tiny": {"source": "synthetic", "n_train": 4, "patch_size": [16, 16, 16], "augment": "rotflip_crop"}},
        "protocol": {"iterations": iterations, "n_filters": 2, "lr_schedule": "poly"},
        "method_overrides": {"ad_mt": {"alternation_period": 4}},
    }
    params = cell_params(config, RunId("tiny", "ad_mt", 2, 1))
    params["data"]["root"] = str(root)
    return resolve_run(params)


def test_resume_in_the_middle_of_a_period_continues_the_schedule(tiny_dataset, tmp_path):
    cfg = run_config(tiny_dataset)
    book = Bookkeeping(log_every=1, checkpoint_every=2)
    # seed 1, P = 4: periods [0, 2) A, [2, 5) B, [5, 8) A; the checkpoint after iteration 4 resumes inside B
    alternation = ad_mt.Alternation(cfg.seed, 4)
    assert alternation.period(3) == alternation.period(4) == 1 and alternation.period(5) == 2
    train(cfg, tmp_path / "full", device=CPU, bookkeeping=book)
    assert train(cfg, tmp_path / "crash", device=CPU, bookkeeping=book, stop_after=5) == {"stopped_at": 5}
    assert train(cfg, tmp_path / "crash", device=CPU, bookkeeping=book)["resumed_from"] == 4

    def logs(run: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]

    assert [r["alt/teacher_a"] for r in logs("full")] == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert logs("crash") == logs("full")
    full = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state"]
    resumed = torch.load(tmp_path / "crash" / "model.pt", weights_only=True)["state"]
    for module in ("net", "teacher_a", "teacher_b"):
        for key, value in full[module].items():
            assert torch.equal(value, resumed[module][key]), f"{module}.{key}"


# -- EMA ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("it", "alpha"),
    [
        (0, 0.0),
        (79, 0.0),
        (80, 0.0),
        (81, 0.0),
        (82, 0.5),
        (84, 2 / 3),
        (100, 10 / 11),
        (276, 98 / 99),
        (278, 0.99),
        (15000, 0.99),
    ],
)
def test_ema_coefficient_warm_up_in_half_iterations(it, alpha):
    # g = t // 2; α = 0 while g < 40 (also at g = 40: 1 − 1/1), then min(1 − 1/(g − 39), 0.99)
    assert ad_mt.ema_alpha(it, 40, 0.99) == pytest.approx(alpha, abs=1e-12)


def test_ema_blends_parameters_and_buffers():
    teacher, student = nn.BatchNorm3d(1), nn.BatchNorm3d(1)
    values = {
        "weight": (1.0, 4.0),
        "running_mean": (3.0, 0.0),
        "running_var": (1.0, 7.0),
        "num_batches_tracked": (3, 9),
    }
    with torch.no_grad():
        for name, (t, s) in values.items():
            getattr(teacher, name).fill_(t)
            getattr(student, name).fill_(s)
    ad_mt.update_ema_with_buffers(teacher, student, ad_mt.ema_alpha(84))  # α = 2/3
    assert teacher.weight.item() == pytest.approx(2.0, abs=1e-6)  # 2/3·1 + 1/3·4
    assert teacher.running_mean.item() == pytest.approx(2.0, abs=1e-6)  # 2/3·3 + 1/3·0
    assert teacher.running_var.item() == pytest.approx(3.0, abs=1e-6)  # 2/3·1 + 1/3·7
    assert teacher.num_batches_tracked.dtype == torch.int64 and teacher.num_batches_tracked.item() == 5
    ad_mt.update_ema_with_buffers(teacher, student, 0.0)  # warm-up: an exact copy
    assert all(
        torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), student.state_dict().values(), strict=True)
    )


def test_only_the_teacher_of_the_period_is_updated(monkeypatch):
    fixed_periods(monkeypatch, [2, 3])  # iterations 0, 1: A; 2, 3, 4: B
    m = method()
    a0, b0 = (snapshot(t) for t in (m.teacher_a, m.teacher_b))
    m.after_optimizer_step(Progress(1, 100, 0.01))  # α(1) = 0: A becomes the student, B untouched
    assert (
        states_equal(m.teacher_a, m.net) and states_equal_to(m.teacher_b, b0) and not states_equal_to(m.teacher_a, a0)
    )
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(1.0)
    m.after_optimizer_step(Progress(2, 100, 0.01))
    assert states_equal(m.teacher_b, m.net) and not states_equal(m.teacher_a, m.net)


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def states_equal_to(net: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    return states_equal_to(a, b.state_dict())


def record(seen: dict, name: str, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
    seen[name] = (module.training, args[0].clone())


@pytest.mark.parametrize("a_period", [True, False])
def test_teacher_modes_and_inputs(monkeypatch, a_period):
    fixed_periods(monkeypatch, [1, 1])  # iteration 0: A, iteration 1: B
    m = method()
    seen = {}
    for name, teacher in (("a", m.teacher_a), ("b", m.teacher_b)):
        teacher.register_forward_hook(partial(record, seen, name))
    m.train()
    x = torch.randn(4, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    out = m.training_step(Batch(x=x, y=(x[:2, 0] > 0).long(), n_labeled=2), Progress(0 if a_period else 1, 10, 0.01))
    assert seen["a"][0] is a_period and seen["b"][0] is not a_period  # the updated teacher in train mode
    assert torch.equal(seen["a"][1], x[2:]) and torch.equal(seen["b"][1], x[2:])  # both on the weak x_U
    assert out.logs["alt/teacher_a"] == float(a_period) and m.net.training


# -- teacher combination and student override (brief T4) ---------------------------------------------------------------
def test_entropy_weighted_combination_of_two_voxels():
    # voxel a: A (0.1, 0.9), B (0.3, 0.7): H_A = 0.468996, H_B = 0.881291 bits, w_A = σ(0.412295) = 0.601638,
    # p̄_fg = 0.820328; voxel b: A (0.2, 0.8), B (0.95, 0.05): w_A = σ(−0.435531) = 0.392806, p̄ = (0.655395, 0.344605)
    label, conf, conflict = ad_mt.combine_teachers(probs(0.9, 0.8), probs(0.7, 0.05))
    assert label.flatten().tolist() == [1, 0] and conflict.flatten().tolist() == [False, True]
    assert conf.flatten().tolist() == pytest.approx([0.8203276, 0.6553953], abs=1e-6)
    assert ad_mt.entropy_bits(probs(0.9)).item() == pytest.approx(0.4689956, abs=1e-6)
    label, conf, _ = ad_mt.combine_teachers(probs(0.9, 0.8), probs(0.7, 0.05), "mean")  # pre-8cf8dec: (p_A + p_B)/2
    assert label.flatten().tolist() == [1, 0] and conf.flatten().tolist() == pytest.approx([0.8, 0.575], abs=1e-6)


@pytest.mark.parametrize(
    ("student_fg", "label", "conf", "kept"),
    [
        (0.9, 1, 0.9, True),  # conflict, student disagrees and is more confident: its label, kept (0.9 ≥ 0.8)
        (0.7, 1, 0.7, False),  # overridden, but 0.7 < 0.8: ignored
        (0.4, 0, 0.6553953, False),
    ],  # the student agrees with the ensemble: no override, 0.655 < 0.8: ignored
)
def test_student_override_on_the_conflicting_voxel(student_fg, label, conf, kept):
    t_label, t_conf, conflict = ad_mt.combine_teachers(probs(0.9, 0.8), probs(0.7, 0.05))
    # voxel a (no conflict): a confident disagreeing student (0.01) never overrides
    new_label, new_conf, replaced = ad_mt.student_override(t_label, t_conf, conflict, probs(0.01, student_fg))
    assert new_label.flatten().tolist() == [1, label] and new_conf.flatten()[1].item() == pytest.approx(conf, abs=1e-6)
    assert replaced.flatten().tolist() == [False, label == 1]
    keep = (new_conf >= 0.8).flatten().tolist()
    assert keep == [True, kept]


def test_student_must_be_strictly_more_confident():
    label, conf, conflict = torch.tensor([0]), torch.tensor([0.7]), torch.tensor([True])
    p_student = torch.tensor([[0.3, 0.7]])  # [1 voxel, 2 classes]: label 1 with the same confidence 0.7
    assert ad_mt.student_override(label, conf, conflict, p_student)[2].tolist() == [False]


def test_unsupervised_ce_over_confident_voxels_and_the_empty_case():
    # strong-view fg 0.6 at a (target 1), 0.2 at b (target 1): (−ln 0.6 − ln 0.2)/2 = 1.060132; a third voxel
    # below the threshold is ignored
    logits = torch.log(probs(0.6, 0.2, 0.9))
    loss, kept = ad_mt.unsupervised_ce(
        logits, torch.tensor([[1, 1, 0]]).reshape(1, 3, 1, 1), torch.tensor([0.8, 0.9, 0.79]).reshape(1, 3, 1, 1), 0.8
    )
    assert loss.item() == pytest.approx(1.0601318, abs=1e-6) and kept.item() == pytest.approx(2 / 3)
    assert consistency_weight(0, 2.0, 150, 40.0) * loss.item() == pytest.approx(0.014286, abs=1e-6)
    none, kept = ad_mt.unsupervised_ce(
        logits.requires_grad_(), torch.ones(1, 3, 1, 1, dtype=torch.long), torch.full((1, 3, 1, 1), 0.5), 0.8
    )
    assert none.item() == 0.0 and kept.item() == 0.0  # the reference's mean over nothing is NaN
    none.backward()


# -- supervised loss and ramp (brief T3, T5) ---------------------------------------------------------------------------
def test_supervised_loss_is_half_ce_plus_two_class_dice():
    # y = (1, 0), fg (0.8, 0.3): D_1 = 0.075144, D_0 = 0.084967, Dice = 0.080055, CE = 0.289909 → 0.184982
    loss, logs = ad_mt.supervised_two_class_dice(torch.log(probs(0.8, 0.3)), torch.tensor([[1, 0]]).reshape(1, 2, 1, 1))
    assert loss.item() == pytest.approx(0.1849823, abs=1e-6)
    assert logs["loss/dice"] == pytest.approx(0.0800554, abs=1e-6) and logs["loss/ce"] == pytest.approx(0.2899092)


@pytest.mark.parametrize(
    ("it", "weight"),
    [(0, 0.0134759), (149, 0.0134759), (3000, 0.5730096), (5999, 1.9937598), (6000, 2.0), (14999, 2.0)],
)
def test_unsupervised_weight_ramps_on_iteration_over_150(it, weight):
    cfg = ad_mt.Config()
    assert consistency_weight(it, cfg.consistency_weight, *cfg.ramp) == pytest.approx(weight, abs=1e-7)


def test_training_step_by_hand_in_a_teacher_a_period():
    """One labeled and one unlabeled sample of 2 voxels; the strong view without colour or noise equals x_U."""
    m = method(color_prob=0.0, noise_prob=0.0)
    m.net = LinearLogits()  # fg probability σ(x)
    m.teacher_a, m.teacher_b = FixedProbs(probs(0.9, 0.8)), FixedProbs(probs(0.7, 0.05))
    x_l = torch.tensor([math.log(4.0), math.log(3 / 7)]).reshape(1, 1, 2, 1, 1)  # fg 0.8, 0.3
    x_u = torch.tensor([math.log(1.5), math.log(9.0)]).reshape(1, 1, 2, 1, 1)  # fg 0.6, 0.9
    batch = Batch(x=torch.cat([x_l, x_u]), y=torch.tensor([[1, 0]]).reshape(1, 2, 1, 1), n_labeled=1)
    out = m.training_step(batch, Progress(0, 15000, 0.01))
    assert torch.equal(m.net.inputs[0], torch.cat([x_l, x_u, x_u]))  # lb weak, ulb weak, ulb strong
    # a: teachers agree on 1 (0.820 ≥ 0.8): −ln 0.6; b: the student (0.9) overrides the ensemble (0: 0.655): −ln 0.9
    assert out.logs["loss/unsup"] == pytest.approx(0.3080931, abs=1e-6)
    assert out.logs["pseudo/student"] == 0.5 and out.logs["pseudo/kept"] == 1.0 and out.logs["pseudo/conflict"] == 0.5
    assert out.logs["pseudo/high_ratio"] == 0.5 and out.logs["w/unsup"] == pytest.approx(0.0134759, abs=1e-7)
    assert out.loss.item() == pytest.approx(0.1849823 + 0.0134759 * 0.3080931, abs=1e-6)  # 0.189134


def test_training_step_in_a_teacher_b_period_mixes_image_and_labels(monkeypatch):
    fixed_periods(monkeypatch, [1])  # iteration 1: teacher B
    m = method()
    m.net = LinearLogits()
    fg_a = torch.full((2, 1, 8, 8, 8), 0.9)
    fg_a[1] = 0.1  # teacher A: sample 0 foreground, sample 1 background, everywhere
    p_a = torch.cat([1 - fg_a, fg_a], dim=1)
    m.teacher_a, m.teacher_b = FixedProbs(p_a), FixedProbs(p_a.clone())
    boxes_drawn = (torch.tensor([1, 0]), 0.75, torch.tensor([[2, 5, 4], [7, 1, 4]]))
    monkeypatch.setattr(ad_mt, "draw_cutmix", lambda n, size, beta: boxes_drawn)
    x = torch.randn(4, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    m.training_step(Batch(x=x, y=torch.zeros(2, 8, 8, 8, dtype=torch.long), n_labeled=2), Progress(1, 100, 0.01))
    strong = m.net.inputs[0][4:]
    expected = x[2:].clone()
    expected[0, :, 0:4, 3:7, 2:6] = x[3, :, 0:4, 3:7, 2:6]
    expected[1, :, 5:8, 0:3, 2:6] = x[2, :, 5:8, 0:3, 2:6]
    assert torch.equal(strong, expected) and torch.equal(m.net.inputs[0][:4], x)


# -- CutMix (brief T6) -------------------------------------------------------------------------------------------------
def test_cutmix_boxes_on_an_8_cube():
    # λ = 0.75 → sqrt(0.25) = 0.5 → side 4 on every axis, half 2; sample 1's box is clipped at both ends
    boxes = ad_mt.cutmix_boxes((8, 8, 8), 0.75, torch.tensor([[2, 5, 4], [7, 1, 4]]))
    assert boxes == [(0, 4, 3, 7, 2, 6), (5, 8, 0, 3, 2, 6)]
    volumes = [(x2 - x1) * (y2 - y1) * (z2 - z1) for x1, x2, y1, y2, z1, z2 in boxes]
    assert volumes == [64, 36]  # 64 / 512 = 0.125 = (1 − λ)^1.5, not 1 − λ


def test_cutmix_pastes_the_same_box_from_the_partner_and_keeps_self_swaps():
    img = torch.arange(2 * 512, dtype=torch.float32).reshape(2, 1, 8, 8, 8)
    lab = torch.stack([torch.zeros(8, 8, 8, dtype=torch.long), torch.ones(8, 8, 8, dtype=torch.long)])
    boxes = ad_mt.cutmix_boxes((8, 8, 8), 0.75, torch.tensor([[2, 5, 4], [7, 1, 4]]))
    mixed_img, mixed_lab = ad_mt.cutmix([img, lab], torch.tensor([1, 0]), boxes)
    assert int(mixed_lab[0].sum()) == 64 and int((1 - mixed_lab[1]).sum()) == 36
    assert torch.equal(mixed_lab[0, 0:4, 3:7, 2:6], torch.ones(4, 4, 4, dtype=torch.long))
    assert torch.equal(mixed_img[0, :, 0:4, 3:7, 2:6], img[1, :, 0:4, 3:7, 2:6])
    assert torch.equal(mixed_img[1, :, 5:8, 0:3, 2:6], img[0, :, 5:8, 0:3, 2:6])
    assert int((mixed_img != img).sum()) == 64 + 36
    same_img, same_lab = ad_mt.cutmix([img, lab], torch.tensor([0, 1]), boxes)  # identity perm: a no-op
    assert torch.equal(same_img, img) and torch.equal(same_lab, lab)


def test_cutmix_draws_perm_beta_4_4_and_centres_from_s_over_8():
    torch.manual_seed(0)
    draws = [ad_mt.draw_cutmix(2, (8, 16, 80), 4.0) for _ in range(2000)]
    lams = torch.tensor([lam for _, lam, _ in draws])
    centres = torch.stack([c for _, _, c in draws])  # [2000, 2, 3]
    assert abs(lams.mean().item() - 0.5) < 0.02 and abs(lams.var().item() - 1 / 36) < 0.004  # Beta(4, 4)
    assert centres.amin(dim=(0, 1)).tolist() == [1, 2, 10] and centres.amax(dim=(0, 1)).tolist() == [7, 15, 79]
    perms = {tuple(p.tolist()) for p, _, _ in draws}
    assert perms == {(0, 1), (1, 0)}


# -- strong view -------------------------------------------------------------------------------------------------------
def scripted_rand(monkeypatch, *values: list[float]) -> None:
    """torch.rand returns `values[0]`, then `values[1]`, ... (float64), in call order."""
    queue = list(values)
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor(queue.pop(0), dtype=torch.float64))


def test_brightness_contrast_by_hand(monkeypatch):
    # a = 1 + 0.5·(2·0.75 − 1) = 1.25, b = 0.5·(2·0.25 − 1) = −0.25, u = 0.5 < 0.8; σ draw, u' = 0.9 ≥ 0.2: no noise
    # n = [0, 1/3, 2/3, 1]·1.25, mean 0.625, n − 0.15625 clipped to [0, 1], times 3
    scripted_rand(monkeypatch, [0.75, 0.25, 0.5], [0.5, 0.9])
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 1, 4, 1, 1)
    out = ad_mt.intensity_augment(x, ad_mt.Config())
    assert out.flatten().tolist() == pytest.approx([0.0, 0.78125, 2.03125, 3.0], abs=1e-6)


@pytest.mark.parametrize(("u", "applied"), [(0.79, True), (0.8, False)])
def test_brightness_contrast_probability(monkeypatch, u, applied):
    scripted_rand(monkeypatch, [1.0, 0.5, u], [0.0, 0.5])  # a = 1.5, b = 0 (no noise)
    x = torch.tensor([0.0, 1.0, 2.0]).reshape(1, 1, 3, 1, 1)
    out = ad_mt.intensity_augment(x, ad_mt.Config()).flatten().tolist()
    assert out == pytest.approx([0.0, 1.5, 2.0] if applied else [0.0, 1.0, 2.0])  # clip(1.5·n, 0, 1)


def test_constant_patch_is_left_alone(monkeypatch):
    scripted_rand(monkeypatch, [0.0, 0.0, 0.0], [0.0, 0.5])
    x = torch.full((1, 1, 2, 2, 2), 3.0)
    assert torch.equal(ad_mt.intensity_augment(x, ad_mt.Config()), x)


@pytest.mark.parametrize(("v0", "sigma"), [(0.0, 0.1), (1.0, 1.0)])
def test_gaussian_noise_is_clipped_at_two_sigma(monkeypatch, v0, sigma):
    scripted_rand(monkeypatch, [0.5, 0.5, 0.9], [v0, 0.19])  # no colour; σ = 0.1 + 0.9·v0; u' = 0.19 < 0.2
    x = torch.zeros(1, 1, 16, 16, 16)
    diff = ad_mt.intensity_augment(x, ad_mt.Config()) - x
    assert diff.abs().max().item() == pytest.approx(2 * sigma)  # some of 4096 draws exceed 2σ and are clipped
    assert 0.9 * sigma < diff.std().item() < sigma


def test_every_sample_gets_its_own_draws():
    torch.manual_seed(3)
    x = torch.randn(1, 1, 8, 8, 8).repeat(2, 1, 1, 1, 1)
    out = ad_mt.intensity_augment(x, ad_mt.Config(color_prob=1.0, noise_prob=0.0))
    assert not torch.equal(out[0], out[1])
    assert (out >= x.amin() - 1e-6).all() and (out <= x.amax() + 1e-6).all()  # colour step stays in [m, M]


# -- the contract's unlabeled check, and config ------------------------------------------------------------------------
def unlabeled_gradient(m: ad_mt.ADMT, it: int) -> float:
    x = torch.randn(4, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    batch = Batch(x=x, y=(x[:2, 0] > 0.5).long(), n_labeled=2)
    m.train()
    (grad,) = torch.autograd.grad(m.training_step(batch, Progress(it, 15000, 1e-4)).loss, x)
    return float(grad[2:].abs().sum())


@pytest.mark.parametrize("teacher_a", [True, False])  # the strong view and the CutMix view
def test_learns_from_unlabeled_samples_when_the_teachers_are_confident(teacher_a):
    torch.manual_seed(0)
    m = ad_mt.ADMT(ad_mt.Config(), partial(build_net, n_filters=2, normalization="none"), CPU)
    it = next(t for t in range(6000, 6100) if m._active(t)[2] is teacher_a)  # full unlabeled weight
    assert unlabeled_gradient(m, it) == 0.0  # fresh random teachers: max p̄ < 0.8, nothing is kept
    with torch.no_grad():  # sharpen both teachers: their pseudo labels pass the threshold
        for teacher in (m.teacher_a, m.teacher_b):
            teacher.out_conv.weight.mul_(100.0), teacher.out_conv.bias.mul_(100.0)
    assert unlabeled_gradient(m, it) > 0.0


def test_config_is_checked():
    with pytest.raises(ValueError, match="alternation_period"):
        ad_mt.Config(alternation_period=0)
    with pytest.raises(ValueError, match="ensemble"):
        ad_mt.Config(ensemble="max")
    m = method()
    assert m.eval_network() is m.net and set(m.modules()) == {"net", "teacher_a", "teacher_b"}
    assert not any(p.requires_grad for t in (m.teacher_a, m.teacher_b) for p in t.parameters())
    assert list(m.optim_groups()) == ["main"] and len(m.optim_groups()["main"]) == len(list(m.net.parameters()))
