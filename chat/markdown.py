"""Model answers as HTML: Markdown rendered by markdown-it-py, then sanitized by nh3.

Model output is untrusted text: a prompt (or a file, or a web page a tool read)
can make a model write anything. Two walls stand between it and the page:
markdown-it runs with raw HTML off, so `<script>` or `<img onerror=…>` in an
answer comes out as escaped text, and its link check drops `javascript:` and
`data:` links; nh3 then keeps only the tags Markdown itself produces, with no
attribute but a link's `href` (http, https or mailto only) and `title`.
"""

from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt

# CommonMark plus GitHub's tables and ~~strikethrough~~; a single newline is a line
# break, as chat models mean it. Images are off: an answer never makes the browser
# fetch a URL the model chose (it shows as a link instead).
_parser = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False, "typographer": False})
_parser.enable(["table", "strikethrough"]).disable("image")

ALLOWED_TAGS = {
    *("p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"),
    *("strong", "em", "del", "s", "code", "pre", "a"),
    *("ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td"),
}
_SAFE_HREF = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    # Relative links and fragments would point into Pantheon itself; only absolute web
    # and mail links are kept (nh3's scheme list alone lets relative URLs through).
    if tag == "a" and attribute == "href" and not _SAFE_HREF.match(value.strip()):
        return None
    return value


_cleaner = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    attributes={"a": {"href", "title"}, "ol": {"start"}},
    attribute_filter=_keep_attribute,
    url_schemes={"http", "https", "mailto"},
    link_rel="nofollow noopener noreferrer",
    set_tag_attribute_values={"a": {"target": "_blank"}},
)


def sanitize_html(html: str) -> str:
    """`html` with only the allowed tags and attributes left (the second wall)."""
    return _cleaner.clean(html)


def render_markdown(text: str) -> str:
    """Safe HTML for `text` (a model's answer written in Markdown)."""
    if not text:
        return ""
    return sanitize_html(_parser.render(text))
