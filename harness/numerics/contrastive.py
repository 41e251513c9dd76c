"""Contrastive building blocks shared by the contrastive methods (`docs/methods/`: simcvd, cvrl, sup_local_contrast).

All losses are vectorised: one similarity matrix per call, no Python loop over slices, voxels or positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
        raise ValueError(f"anchors and candidates must both be [N, D]; got {tuple(anchors.shape)}, "
                         f"{tuple(candidates.shape)}")  # fmt: skip
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
        self, pool: int = 128, hidden: tuple[int, ...] = (256, 256), out: int = 128, dropout: float = 0.1,
        l2_normalise: bool = True, pool_mode: str = "avg",
    ) -> None:  # fmt: skip
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
            raise ValueError(f"keys must be [N, {self.keys.shape[1]}] and case_ids [N]; got {tuple(keys.shape)}, "
                             f"{tuple(case_ids.shape)}")  # fmt: skip
        size = self.keys.shape[0]
        idx = (self.ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.keys[idx] = keys.detach().to(self.keys.dtype)
        self.case_ids[idx] = case_ids.to(self.case_ids.dtype)
        self.ptr.copy_((self.ptr + keys.shape[0]) % size)

    def negative_mask(self, anchor_case_ids: torch.Tensor) -> torch.Tensor:
        """`[N, Q]` bool: queue entry usable as a negative for each anchor (filled and from another case)."""
        filled = self.case_ids >= 0
        return filled[None, :] & (self.case_ids[None, :] != anchor_case_ids[:, None])


def info_nce_masked(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, mask: torch.Tensor,
                    tau: float) -> torch.Tensor:  # fmt: skip
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
        raise ValueError(f"emb must be [V, D, X, Y, Z] and labels [V, X, Y, Z]; got {tuple(emb.shape)}, "
                         f"{tuple(labels.shape)}")  # fmt: skip
    if stride < 1:
        raise ValueError(f"stride must be >= 1; got {stride}")
    e = emb[:, :, ::stride, ::stride, ::stride]
    lab = labels[:, ::stride, ::stride, ::stride]
    v, d = e.shape[:2]
    if block is None:
        return e.permute(0, 2, 3, 4, 1).reshape(1, -1, d), lab.reshape(1, -1)
    if block % stride or any(s % block for s in emb.shape[2:]):
        raise ValueError(f"block ({block}) must be a multiple of stride ({stride}) and divide the patch "
                         f"{tuple(emb.shape[2:])}")  # fmt: skip
    b = block // stride
    nx, ny, nz = (s // b for s in e.shape[2:])
    e = e.reshape(v, d, nx, b, ny, b, nz, b).permute(2, 4, 6, 0, 3, 5, 7, 1).reshape(nx * ny * nz, -1, d)
    lab = lab.reshape(v, nx, b, ny, b, nz, b).permute(1, 3, 5, 0, 2, 4, 6).reshape(nx * ny * nz, -1)
    return e, lab
