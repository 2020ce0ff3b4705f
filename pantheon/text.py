"""Text made storable: PostgreSQL refuses NUL, and UTF-8 cannot encode a lone surrogate.

Text from uploaded files, tools and models passes through `storable` before it is
written or handed on, so content a user controls can never fail a write.
"""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with each NUL and each lone surrogate replaced by U+FFFD.

    A surrogate pair (two code points that encode one character, as a JSON escape
    or a UTF-16 decoder may leave them) becomes that character.
    """
    if _UNSTORABLE.search(text) is None:
        return text
    text = text.replace("\x00", "\ufffd")
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
