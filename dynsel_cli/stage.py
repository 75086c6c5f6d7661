"""The stage contract: what every stage (extract, fit-sae, factors, plan) offers whoever runs it.

A stage is a value, not a class hierarchy: its command name, the artifact kind it writes, which inputs it
reads, and four plain functions:

- ``validate(config)``: refuse bad settings before any work (raises ``DynselError``);
- ``input_fingerprints(inputs, config)``: the fingerprints of what it reads, as its manifest records them;
- ``recorded_inputs(manifest)``: the input fingerprints an existing artifact was made from;
- ``build(inputs, out, config, progress, options)``: make the artifact through its one writer (atomic,
  with the provenance of :mod:`dynsel_cli.provenance`) and return its manifest.

From these, :meth:`Stage.current` answers "is the existing output current?" the same way for every stage:
same dynsel version, same artifact settings, same input fingerprints, checksums intact. ``dynsel run``
(:mod:`dynsel_cli.pipeline`) loops over the stages through this contract only, and another executor can
do the same without the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .config import artifact_settings
from .errors import ArtifactError
from .progress import LogFn, ProgressFn, null_log


@dataclass(frozen=True)
class BuildOptions:
    """How to build, as opposed to what: none of these change the artifact's content."""

    force: bool = False  # --force: may replace a dynsel artifact of another kind
    restart: bool = False  # fit-sae: ignore the saved state of an interrupted run
    formats: tuple[str, ...] = ("bin", "txt", "parquet")  # plan: which files besides the manifest
    log: LogFn = null_log
    source_name: str | None = None  # extract: the source's URI when it is read from a local copy (manifest source.path)


@dataclass(frozen=True)
class Stage:
    command: str  # "extract", "fit-sae", "factors", "plan"
    artifact: str  # the artifact's name as an input of later stages and as a folder of a run directory
    kind: str  # the artifact kind it writes (its manifest's "format")
    inputs: Callable[[Any], tuple[str, ...]]  # names of the inputs it reads, for a config
    validate: Callable[[Any], None]
    read_manifest: Callable[[Path], dict[str, Any]]  # reads and checksum-verifies an existing artifact
    input_fingerprints: Callable[[dict[str, Path], Any], dict[str, str]]
    recorded_inputs: Callable[[dict[str, Any]], dict[str, Any]]
    build: Callable[[dict[str, Path], Path, Any, ProgressFn, BuildOptions], dict[str, Any]]
    has_options: Callable[[dict[str, Any], BuildOptions], bool] = lambda manifest, options: (
        True
    )  # e.g. the plan's --formats

    def current(
        self, out: Path, inputs: dict[str, Path], config: Any, options: BuildOptions = BuildOptions()
    ) -> dict[str, Any] | None:
        """The manifest of the artifact at ``out`` if it is current for these inputs, settings and options, else None."""
        if not Path(out).exists():
            return None
        try:
            manifest = self.read_manifest(Path(out))
        except ArtifactError:
            return None
        return manifest if self.current_manifest(manifest, inputs, config, options) else None

    def current_manifest(
        self, manifest: dict[str, Any], inputs: dict[str, Path], config: Any, options: BuildOptions = BuildOptions()
    ) -> bool:
        """Whether an artifact with this manifest is current for these inputs, settings and options; its files
        are not looked at (so a published artifact can be judged before it is downloaded)."""
        if manifest.get("dynsel_version") != __version__ or manifest.get("settings") != artifact_settings(config):
            return False
        recorded = self.recorded_inputs(manifest)
        wanted = self.input_fingerprints(inputs, config)
        return all(recorded.get(name) == value for name, value in wanted.items()) and self.has_options(
            manifest, options
        )


def recorded_inputs(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``inputs`` a manifest records (every stage but extract, which records its source)."""
    inputs = manifest.get("inputs")
    return dict(inputs) if isinstance(inputs, dict) else {}
