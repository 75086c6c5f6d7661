"""The user-facing error type.

Stages raise :class:`DynselError` for anything the user can fix (bad input, bad options, mismatched
artifacts). The CLI turns it into one line on stderr and exit code 2; anything else is a bug (exit 1).
"""

from __future__ import annotations


class DynselError(Exception):
    """A problem with the user's input or options; the message says what is wrong and how to fix it."""


class ArtifactError(DynselError):
    """An artifact on disk is missing, corrupt, of the wrong kind, or does not match its inputs."""


class DeviceError(DynselError, ValueError):
    """``--device`` names a device that does not exist or is not usable here (also a ValueError for library callers)."""


def install_hint(extra: str) -> str:
    """How to install an optional extra, true both for an installed package and for a checkout."""
    return f"pip install 'dynsel[{extra}]' (in a checkout of dynsel: pip install -e '.[{extra}]')"
