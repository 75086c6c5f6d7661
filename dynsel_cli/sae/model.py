"""A TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

Parameter names and shapes follow EleutherAI's sparsify so checkpoints are interchangeable:
``encoder`` is a Linear(d, m) (weight [m, d]), ``W_dec`` is [m, d] with unit-norm rows, ``b_dec`` is [d].

    z = TopK_k(ReLU(encoder(x - b_dec)))        x̂ = z · W_dec + b_dec

Training uses the sparse backward pass of OpenAI's reference implementation: only the k selected units
(and the AuxK units) of each sample get a gradient, so the encoder's backward pass costs B·k·d instead of
two dense B·m·d products. The forward pass is one dense product and a top-k.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Encoded(NamedTuple):
    values: torch.Tensor  # [B, k] the k largest activations (≥ 0), largest first
    indices: torch.Tensor  # [B, k] their unit ids


class TrainCodes(NamedTuple):
    values: torch.Tensor  # [B, k]
    indices: torch.Tensor  # [B, k]
    aux_values: torch.Tensor | None  # [B, k_aux] the largest activations among dead units (AuxK)
    aux_indices: torch.Tensor | None


class _SparseTopKEncoder(torch.autograd.Function):
    """TopK(ReLU((x - b_dec) W^T + b)) with a backward pass that touches only the selected units.

    For the selected pairs (sample i, unit j) with upstream gradient g_ij: ∂W_j = Σ_i g_ij (x_i − b_dec) (a
    sparse-transpose-dense product), ∂b_j = Σ_i g_ij, and ∂b_dec = −Σ_j ∂b_j W_j (reduced over the batch
    before the product, as in OpenAI's reference code).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        b_dec: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        k: int,
        dead: torch.Tensor | None,
        k_aux: int,
    ):  # type: ignore[override]
        centred = x - b_dec
        pre = (centred @ weight.t()).add_(bias)  # faster than addmm's broadcast bias on the CPU
        values, indices = pre.topk(k, dim=1, sorted=True)
        values = values.clamp_min_(0)
        aux_values = aux_indices = None
        if dead is not None:
            dead = dead.clone()
            dead[indices[values > 0]] = False  # a unit firing in this batch is alive (as in OpenAI's code)
            masked = pre.masked_fill_(~dead, float("-inf"))  # in place: pre is not needed any more
            aux_values, aux_indices = masked.topk(k_aux, dim=1, sorted=False)
            aux_values = aux_values.clamp_min_(0)
            all_values, all_indices = torch.cat([values, aux_values], 1), torch.cat([indices, aux_indices], 1)
        else:
            all_values, all_indices = values, indices
        ctx.save_for_backward(centred, weight, all_values, all_indices)
        ctx.k = k
        ctx.mark_non_differentiable(indices)
        if aux_indices is not None:
            ctx.mark_non_differentiable(aux_indices)
        return values, indices, aux_values, aux_indices

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor, _gi: Any, grad_aux: torch.Tensor | None, _ga: Any):  # type: ignore[override]
        centred, weight, values, indices = ctx.saved_tensors
        k = ctx.k
        if grad_values is None:
            grad_values = torch.zeros_like(values[:, :k])
        if indices.shape[1] > k:  # AuxK units follow the k main ones
            grad_values = torch.cat(
                [grad_values, grad_aux if grad_aux is not None else torch.zeros_like(values[:, k:])], 1
            )
        grad = grad_values * (values > 0)  # ReLU
        flat_units = indices.reshape(-1)
        grad_w = grad_b = grad_b_dec = None
        if ctx.needs_input_grad[2]:
            rows = torch.arange(centred.shape[0], device=centred.device).repeat_interleave(indices.shape[1])
            g = torch.sparse_coo_tensor(
                torch.stack([flat_units, rows]),
                grad.reshape(-1),
                (weight.shape[0], centred.shape[0]),
                check_invariants=False,
            )
            grad_w = torch.sparse.mm(g, centred)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            per_unit = torch.zeros(weight.shape[0], dtype=grad.dtype, device=grad.device).index_add_(
                0, flat_units, grad.reshape(-1)
            )
            grad_b = per_unit if ctx.needs_input_grad[3] else None
            grad_b_dec = -(per_unit @ weight) if ctx.needs_input_grad[1] else None
        return None, grad_b_dec, grad_w, grad_b, None, None, None


class TopKSae(nn.Module):
    def __init__(self, d_in: int, width: int, k: int) -> None:
        super().__init__()
        self.d_in, self.width, self.k = d_in, width, k
        self.encoder = nn.Linear(d_in, width)
        self.W_dec = nn.Parameter(torch.empty(width, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def init_weights(self, generator: torch.Generator, b_dec: torch.Tensor) -> None:
        """Random unit-norm decoder rows; encoder = decoder transpose; decoder bias = given (geometric median)."""
        with torch.no_grad():
            w = torch.randn(self.width, self.d_in, generator=generator)
            w /= w.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w)
            self.encoder.weight.copy_(w)
            self.encoder.bias.zero_()
            self.b_dec.copy_(b_dec)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> Encoded:
        """Codes of (normalised) inputs: at most k non-zero activations per row, largest first."""
        pre = ((x - self.b_dec) @ self.encoder.weight.t()).add_(self.encoder.bias)
        values, indices = pre.topk(self.k, dim=1, sorted=True)
        return Encoded(values.clamp_min_(0), indices)

    def encode_train(self, x: torch.Tensor, dead: torch.Tensor | None = None, k_aux: int = 0) -> TrainCodes:
        """Codes with the sparse backward pass; with ``dead`` also the AuxK codes (top ``k_aux`` dead units)."""
        if dead is not None:
            k_aux = min(k_aux, int(dead.sum()))
            if k_aux < 1:
                dead = None
        values, indices, aux_values, aux_indices = _SparseTopKEncoder.apply(
            x, self.b_dec, self.encoder.weight, self.encoder.bias, self.k, dead, k_aux
        )
        return TrainCodes(values, indices, aux_values, aux_indices)

    def decode(self, values: torch.Tensor, indices: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        out = F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")
        return out + self.b_dec if with_bias else out

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min_(1e-12))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out the gradient component along each decoder row (keeps rows on the unit sphere)."""
        if self.W_dec.grad is None:
            return
        grad, w = self.W_dec.grad, self.W_dec
        parallel = torch.bmm(grad.unsqueeze(1), w.unsqueeze(2)).reshape(
            -1, 1
        )  # row-wise dot products, no [m, d] temporary
        grad.addcmul_(parallel, w, value=-1)


def geometric_median(points: torch.Tensor, iterations: int = 100, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances."""
    points = points.double()
    median = points.mean(dim=0)
    for _ in range(iterations):
        distances = (points - median).norm(dim=1).clamp_min(eps)
        weights = 1.0 / distances
        updated = (weights[:, None] * points).sum(dim=0) / weights.sum()
        if (updated - median).norm() < eps * (1 + median.norm()):
            return updated.float()
        median = updated
    return median.float()


def fvu(x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained: ||x - x̂||² / ||x - mean(x)||² over the batch."""
    total = (x - x.mean(dim=0)).pow(2).sum()
    return (x - reconstruction).pow(2).sum() / total.clamp_min(1e-12)
