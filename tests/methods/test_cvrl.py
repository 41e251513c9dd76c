"""cvrl: position sampling, loss composition, queue use with case IDs, same-class exclusion, on a tiny V-Net."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from harness.method import Batch, Progress
from harness.nets import build_net
from harness.numerics.ramps import consistency_weight
from harness.train.loop import Bookkeeping
from methods.cvrl import CVRL, Config, sample_positions

BOOK = Bookkeeping(log_every=1, checkpoint_every=1000)  # bookkeeping: never part of a run's identity

CPU = torch.device("cpu")


def make(**kw) -> CVRL:
    torch.manual_seed(0)
    return CVRL(Config(voxels_per_volume=16, queue_size=4, **kw), partial(build_net, n_filters=2), CPU)


def batch(case_ids=None) -> Batch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 16, 16, 16, generator=g)
    y = torch.zeros(2, 16, 16, 16, dtype=torch.long)
    y[:, 4:12, 4:12, 4:12] = 1
    return Batch(x=x, y=y, n_labeled=2, extras={} if case_ids is None else {"case_id": torch.tensor(case_ids)})


def test_sample_positions_takes_half_foreground_and_fills_from_background_when_short():
    fg = torch.zeros(2, 20, dtype=torch.bool)
    fg[0, :10] = True  # plenty of foreground
    fg[1, :2] = True  # only 2 foreground voxels
    idx = sample_positions(fg, 8, 0.5)
    picked = torch.gather(fg, 1, idx)
    assert picked.sum(1).tolist() == [4, 2]
    assert all(len(set(row.tolist())) == 8 for row in idx)  # distinct positions
    with pytest.raises(ValueError, match="voxels_per_volume"):
        sample_positions(fg, 21, 0.5)


def test_loss_composition_and_defaults():
    assert (Config().voxels_per_volume, Config().queue_size, Config().tau_volume, Config().w_ei) == (256, 64, 0.1, 0.1)
    m = make()
    out = m.training_step(batch(), Progress(it=3000, max_it=6000, lr=0.01))
    lg, r = out.logs, consistency_weight(3000, 1.0)
    total = lg["loss/sup"] + r * 0.1 * (lg["loss/vol"] + lg["loss/vox"] + lg["loss/con"]) + 0.1 * lg["loss/ei"]
    assert out.loss.item() == pytest.approx(total, rel=1e-5)
    assert lg["w/queue_used"] == 0.0 and lg["loss/ei"] > 0
    out.loss.backward()
    assert all(p.grad is not None for p in m.heads.vox.parameters())
    assert all(p.grad is None for p in m.teacher_heads.parameters())


def test_queue_is_filled_with_case_ids_and_excludes_the_same_case():
    m = make()
    m.training_step(batch([7, 8, 9, 10]), Progress(0, 10, 0.01))
    assert m.queue.case_ids.tolist() == [7, 8, 9, 10]
    # next step with case 7 again: its anchors may not use queue slot 0 (case 7) as a negative
    mask = m.queue.negative_mask(torch.tensor([7, 11]))
    assert mask.tolist() == [[False, True, True, True], [True, True, True, True]]
    out = m.training_step(batch([7, 11, 12, 13]), Progress(1, 10, 0.01))
    assert out.logs["w/queue_used"] == 1.0 and torch.isfinite(out.loss)
    assert m.queue.case_ids.tolist() == [7, 11, 12, 13]  # FIFO: capacity 4, fully replaced


def test_exclude_same_class_negatives_changes_only_the_voxel_term():
    a = make()
    la = a.training_step(batch(), Progress(0, 10, 0.01)).logs  # make() seeds: both steps draw the same noise
    b = make(exclude_same_class_negatives=True)
    lb = b.training_step(batch(), Progress(0, 10, 0.01)).logs
    assert la["loss/vol"] == pytest.approx(lb["loss/vol"], rel=1e-6)
    assert lb["loss/vox"] < la["loss/vox"]  # fewer negatives in every denominator


def test_ei_off_and_bad_config():
    out = make(ei_mode="off").training_step(batch(), Progress(0, 10, 0.01))
    assert out.logs["loss/ei"] == 0.0
    for bad in ({"ei_mode": "3d"}, {"variant": "v2"}, {"tau_voxel": 0.0}, {"fg_fraction": 1.5}):
        with pytest.raises(ValueError):
            Config(**bad)


def test_the_loop_feeds_case_ids_so_the_queue_is_used(tiny_dataset, tmp_path):
    import json

    from harness.method.build import resolve_run
    from harness.run.folder import RunId
    from harness.train.loop import train
    from harness.workflow.grid import cell_params

    config = {
        "datasets": {"tiny": {"labeled": [2]}},
        "data": {"tiny": {"source": "synthetic", "n_train": 4, "patch_size": [16, 16, 16], "augment": "crop"}},
        "protocol": {
            "iterations": 3,
            "n_filters": 2,
        },
        "method_overrides": {"cvrl": {"voxels_per_volume": 8, "queue_size": 16}},
    }
    params = cell_params(config, RunId("tiny", "cvrl", 2, 1))
    params["data"]["root"] = str(tiny_dataset)
    train(resolve_run(params), tmp_path, device=CPU, bookkeeping=BOOK)
    logs = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [entry["w/queue_used"] for entry in logs] == [1.0, 1.0, 1.0]
    queue = torch.load(tmp_path / "model.pt", weights_only=True)["state"]["queue"]["case_ids"]
    filled = queue[queue >= 0].tolist()
    assert len(filled) == 12 and set(filled) <= {0, 1, 2, 3}  # 3 steps x 4 samples; IDs of the 4 training cases
    assert {0, 1} <= set(filled[0::4] + filled[1::4])  # labeled cases first in every batch


# -- the method's own numerics, hand-computed -----------------------------------------------------------------------
def test_queue_is_fifo_and_excludes_same_case_and_empty_slots():
    from methods.cvrl import VolumeQueue

    q = VolumeQueue(size=3, dim=2)
    assert not q.negative_mask(torch.tensor([0])).any()  # all slots empty
    q.push(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([10, 11]))
    assert q.case_ids.tolist() == [10, 11, -1] and q.ptr.item() == 2
    q.push(torch.tensor([[3.0, 0.0], [4.0, 0.0]]), torch.tensor([12, 10]))  # wraps: the oldest (10 at slot 0) goes
    assert q.keys[:, 0].tolist() == [4.0, 2.0, 3.0] and q.case_ids.tolist() == [10, 11, 12] and q.ptr.item() == 1
    mask = q.negative_mask(torch.tensor([10, 12, 99]))
    assert mask.tolist() == [[False, True, True], [True, True, False], [True, True, True]]
    assert set(dict(q.named_buffers())) == {"keys", "case_ids", "ptr"}  # checkpointed state


def test_info_nce_masked_hand_computed():
    from methods.cvrl import info_nce_masked

    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    negs = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    only_orth = info_nce_masked(a, p, negs, torch.tensor([[True, False]]), 1.0)
    assert only_orth.item() == pytest.approx(-math.log(math.e / (math.e + 1)))
    both = info_nce_masked(a, p, negs, torch.tensor([[True, True]]), 1.0)
    assert both.item() == pytest.approx(-math.log(math.e / (2 * math.e + 1)))
    none = info_nce_masked(a, p, negs, torch.tensor([[False, False]]), 1.0)
    assert none.item() == pytest.approx(0.0, abs=1e-7)


def test_elastic_energy_zero_for_perfect_prediction_and_grows_with_boundary_displacement():
    from methods.cvrl import elastic_energy, elastic_interaction_loss

    y = torch.zeros(1, 16, 16, 1)
    y[0, 4:10, 4:10, 0] = 1
    assert elastic_interaction_loss(y.clone(), y).item() == pytest.approx(0.0, abs=1e-6)
    losses = []
    for shift in (1, 2, 3):
        p = torch.roll(y, shifts=shift, dims=1)
        losses.append(elastic_interaction_loss(p, y).item())
    assert 0 < losses[0] < losses[1] < losses[2]
    # a constant map has energy only at k = 0, where |k| = 0
    assert elastic_energy(torch.full((4, 4), 0.7)).item() == pytest.approx(0.0, abs=1e-6)
    # a single cosine mode cos(2π·x/4) along x: |F|² = (16/2)² at k = ±2π/4, so E = 2·(π/2)·64/16 = 4π
    xs = torch.arange(4.0)
    d = torch.cos(2 * torch.pi * xs / 4)[:, None].expand(4, 4)
    assert elastic_energy(d).item() == pytest.approx(4 * math.pi, rel=1e-5)
