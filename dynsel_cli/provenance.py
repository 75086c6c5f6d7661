"""What every artifact records about how it was made, written in one place.

Each stage's manifest carries ``dynsel_version``, ``created_by`` (the command), ``inputs`` (the
fingerprints of the artifacts or source it was made from) and ``settings`` (the config fields that define
it). :meth:`dynsel_cli.stage.Stage.current` compares these to decide whether an artifact is current.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .config import artifact_settings


def provenance(command: str, config: Any, inputs: dict[str, str]) -> dict[str, Any]:
    """The manifest fields of an artifact made by ``dynsel COMMAND`` with ``config`` from ``inputs``."""
    return {
        "dynsel_version": __version__,
        "created_by": f"dynsel {command}",
        "inputs": dict(inputs),
        "settings": artifact_settings(config),
    }
