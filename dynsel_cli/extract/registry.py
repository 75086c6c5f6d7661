"""The encoders dynsel ships, by name: what each takes, which pip extra it needs, which class builds it.

Pure data (no torch), so the CLI's help text, the config's defaults and every error message derive from
this one table without loading a model. :func:`dynsel_cli.extract.encoders.make_encoder` builds them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderEntry:
    name: str
    takes: str  # "images", "text" or "vectors"
    extra: str | None  # the pip extra whose packages it imports (None: always available)
    class_name: str  # the class in dynsel_cli.extract.encoders
    default_for: str | None = None  # the source kind it is the `auto` choice for


ENCODERS: dict[str, EncoderEntry] = {
    entry.name: entry
    for entry in (
        EncoderEntry("efficientnet-lite0", "images", "vision", "EfficientNetLite0Encoder", default_for="images"),
        EncoderEntry("minilm", "text", "text", "MiniLMEncoder", default_for="text"),
        EncoderEntry("wordllama", "text", "text", "WordLlamaEncoder"),
        EncoderEntry("identity", "vectors", None, "IdentityEncoder", default_for="vectors"),
    )
}
PATTERNS = ("torchscript:PATH", "hf:PATH", "MODULE:FACTORY")


def default_for(source_kind: str) -> str:
    """The encoder ``--encoder auto`` picks for a source kind."""
    return next(e.name for e in ENCODERS.values() if e.default_for == source_kind)


def names_for(source_kind: str) -> str:
    """The built-in encoders that take ``source_kind``, for error hints ("minilm or wordllama")."""
    return " or ".join(e.name for e in ENCODERS.values() if e.takes == source_kind)


def encoder_help() -> str:
    """The --encoder help text."""
    defaults = ", ".join(f"{e.name} for {e.default_for}" for e in ENCODERS.values() if e.default_for)
    return (
        f"Encoder: auto ({defaults}), {', '.join(ENCODERS)}, torchscript:PATH, hf:PATH (a local Hugging Face "
        "model directory, mean pooling), or MODULE:FACTORY (your Python code; needs --allow-user-code)."
    )


def names_help() -> str:
    return ", ".join(["auto", *ENCODERS, *PATTERNS])
