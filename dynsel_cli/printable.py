"""Text from data (class names, paths, ids, manifest strings) made safe to show on a terminal.

A class name is whatever the data set's folders or label column say, so it may hold escape sequences
that clear the screen, set the window title or forge a hyperlink. :func:`printable` replaces every
control character with its visible Python escape (ESC becomes the four characters ``\\x1b``), so what
reaches the terminal is text, never a command. Rich markup is a second, separate matter: the renderers
pass data as ``rich.text.Text`` or through ``rich.markup.escape`` (this module does not import rich).
"""

from __future__ import annotations

_ESCAPES = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
# C0, DEL and C1 controls; line/paragraph separators and the bidirectional overrides and isolates, which
# reorder what a terminal shows (a name can then display as another)
_CONTROLS = [
    *range(0x00, 0x20),
    0x7F,
    *range(0x80, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_TABLE = {code: _ESCAPES.get(code, f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _CONTROLS}


def printable(value: object) -> str:
    """``str(value)`` with every control character shown as its escape (``\\x1b``, ``\\n``, ``\\u202e``)."""
    return str(value).translate(_TABLE)
