"""A TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

Parameter names and shapes follow EleutherAI's sparsify so checkpoints are interchangeable:
``encoder`` is a Linear(d, m) (weight [m, d]), ``W_dec`` is [m, d] with unit-norm rows, ``b_dec`` is [d].
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Encoded(NamedTuple):
    pre_acts: torch.Tensor  # [B, m] ReLU pre-activations (before TopK)
    values: torch.Tensor  # [B, k] the k largest pre-activations
    indices: torch.Tensor  # [B, k] their unit ids


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

    def encode(self, x: torch.Tensor) -> Encoded:
        pre = F.relu(self.encoder(x - self.b_dec))
        values, indices = pre.topk(self.k, dim=1, sorted=True)
        return Encoded(pre, values, indices)

    def decode(self, values: torch.Tensor, indices: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        out = F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")
        return out + self.b_dec if with_bias else out

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out the gradient component along each decoder row (keeps rows on the unit sphere)."""
        if self.W_dec.grad is None:
            return
        parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
        self.W_dec.grad -= parallel * self.W_dec


def geometric_median(points: torch.Tensor, iterations: int = 100, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances."""
    median = points.mean(dim=0)
    for _ in range(iterations):
        distances = (points - median).norm(dim=1).clamp_min(eps)
        weights = 1.0 / distances
        updated = (weights[:, None] * points).sum(dim=0) / weights.sum()
        if (updated - median).norm() < eps * (1 + median.norm()):
            return updated
        median = updated
    return median


def fvu(x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained: ||x - x̂||² / ||x - mean(x)||² over the batch."""
    total = (x - x.mean(dim=0)).pow(2).sum()
    return (x - reconstruction).pow(2).sum() / total.clamp_min(1e-12)
