"""Hypothesis strategies and builders for hostile content: text PostgreSQL or UTF-8 refuse,
JSON nested past any recursion limit, huge CSV. Hostile PDFs are in tests/support/pdf.py."""

from __future__ import annotations

from hypothesis import strategies as st

# One character no text column can hold: NUL, or a surrogate code point (lone in a str).
unstorable_char = st.one_of(
    st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"]),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
)
# Any code point at all, surrogates included (st.text leaves them out by default).
any_char = st.characters(codec=None, exclude_categories=())


@st.composite
def hostile_text(draw, *, min_unstorable: int = 1) -> str:
    """Text holding at least `min_unstorable` NULs or lone surrogates among ordinary text."""
    pieces = draw(st.lists(st.one_of(st.text(max_size=12), unstorable_char), max_size=20))
    hostile = draw(st.lists(unstorable_char, min_size=min_unstorable, max_size=min_unstorable + 3))
    for char in hostile:
        pieces.insert(draw(st.integers(0, len(pieces))), char)
    return "".join(pieces)


def nested_json(depth: int, *, opener: str = "[") -> str:
    """A JSON document of `depth` nested arrays (`[`) or objects (`{`)."""
    if opener == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# Deeper than file_parse accepts (64), up to far past CPython's recursion limit.
deep_json = st.builds(
    nested_json,
    depth=st.one_of(st.integers(65, 1200), st.integers(1200, 500_000)),
    opener=st.sampled_from(["[", "{"]),
)


def huge_csv(size_bytes: int) -> bytes:
    """A well-formed CSV of at most `size_bytes` (three columns, fixed-width rows)."""
    header = b"id,region,amount\n"
    row = b"%08d,north-east-region,%03d\n"
    rows = (size_bytes - len(header)) // len(row % (0, 0))
    return header + b"".join(row % (number, number % 1000) for number in range(rows))
