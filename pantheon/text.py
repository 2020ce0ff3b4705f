"""Text that can be stored: what files, tools and models produce is not always valid."""

from __future__ import annotations

import re

# NUL cannot be stored in PostgreSQL text; lone surrogates cannot be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with NUL characters removed and lone surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub(lambda match: "" if match.group() == "\x00" else "\ufffd", text)
