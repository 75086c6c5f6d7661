"""The fit-sae stage: a TopK sparse autoencoder whose units are the data set's factors."""

from .model import TopKSae
from .train import fit_sae, train_sae

__all__ = ["TopKSae", "fit_sae", "train_sae"]
