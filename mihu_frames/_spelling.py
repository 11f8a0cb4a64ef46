"""Every way JSON can write a piece of text, as a regular expression over the body's bytes.

The exact ``extra`` engine looks for ``"name": null`` however ``name`` is written, and the
transport looks for the token however a server echoed it: as is, or with any of its characters
as a ``\\u`` escape (either case, a surrogate pair beyond the BMP) or a short escape (``\\/``).
The patterns use only syntax that RE2 (through pyarrow) and Python's :mod:`re` share.
"""

from __future__ import annotations

import functools

_SHORT_ESCAPES = dict(zip('"\\/\b\f\n\r\t', '"\\/bfnrt', strict=True))


@functools.lru_cache(maxsize=4096)
def spelled(text: str) -> str:
    """A pattern over bytes matching every JSON spelling of ``text`` (inside a string).

    Examples
    --------
    >>> import re
    >>> pattern = re.compile(spelled("a/b").encode())
    >>> [bool(pattern.fullmatch(s)) for s in (b"a/b", b"\\\\u0061\\\\/b", b"a\\\\u002Fb", b"ab")]
    [True, True, True, False]
    """
    return "".join(_spelled_char(char) for char in text)


def escapes(text: str) -> str:
    """A pattern matching any escape of a character of ``text``: a cheap first test, since a
    spelling of ``text`` that is not ``text`` itself holds at least one of them."""
    forms = sorted({form for char in set(text) for form in _char_forms(char)[1:]})
    return "(?:" + "|".join(forms) + ")"


def _spelled_char(char: str) -> str:
    return "(?:" + "|".join(_char_forms(char)) + ")"


def _char_forms(char: str) -> list[str]:
    """The character as itself first, then each of its escapes."""
    forms = ["".join(_byte(b) for b in char.encode("utf-8", "surrogatepass"))]
    code = ord(char)
    if code > 0xFFFF:
        code -= 0x10000
        forms.append(_u_escape(0xD800 + (code >> 10)) + _u_escape(0xDC00 + (code & 0x3FF)))
    else:
        forms.append(_u_escape(code))
    if char in _SHORT_ESCAPES:
        forms.append(_byte(0x5C) + _byte(ord(_SHORT_ESCAPES[char])))
    return forms


def _u_escape(code: int) -> str:
    digits = "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{code:04x}")
    return _byte(0x5C) + "u" + digits


def _byte(value: int) -> str:
    char = chr(value)
    return char if char.isascii() and (char.isalnum() or char == "_") else f"\\x{value:02x}"
