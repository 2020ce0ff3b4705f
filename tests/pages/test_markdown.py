"""Answers are Markdown rendered on the server and sanitized: the `markdown` template filter.

Model output is untrusted. These tests parse the HTML the filter makes and check
every element and attribute in it, so "nothing executable" is proven on the
parsed result, not on how the text happens to be spelled.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.template import Context, Template

from chat.markdown import ALLOWED_TAGS, render_markdown, sanitize_html

# Everything that can run script or load a URL once it is an element or an attribute.
DANGEROUS_TAGS = {
    "script",
    "style",
    "iframe",
    "object",
    "embed",
    "img",
    "svg",
    "math",
    "form",
    "input",
    "base",
}


class Elements(HTMLParser):
    """Every start tag with its attributes, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, {name: value or "" for name, value in attrs}))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)


def elements(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser.found


def tags(html: str) -> list[str]:
    return [tag for tag, _ in elements(html)]


def assert_inert(html: str) -> None:
    """No element that runs or loads anything, no event handler, no script URL."""
    for tag, attrs in elements(html):
        assert tag in ALLOWED_TAGS, f"<{tag}> is not an allowed tag: {html}"
        assert tag not in DANGEROUS_TAGS
        for name, value in attrs.items():
            assert not name.startswith("on"), f"event handler {name} on <{tag}>: {html}"
            assert name not in {"style", "src", "srcdoc", "formaction", "action"}
            if name == "href":
                squashed = "".join(ch for ch in value if ch > " ").lower()
                assert squashed.startswith(("https:", "http:", "mailto:")), f"unsafe href {value!r}"


def render_filter(value) -> str:
    return Template("{% load chat_markdown %}{{ value|markdown }}").render(Context({"value": value}))


MARKDOWN = """# Plan

Some **bold**, *em*, `inline <code>` and ~~gone~~ text.
A second line.

- first
- second

1. one
2. two

```python
if a < b and c > d:
    print("<script>alert(1)</script>")
```

| model | multiplier |
|:------|-----------:|
| gpt-4o | 2 |
| deepseek | 0.5 |

> quoted

[docs](https://example.com/docs "The docs")
"""


def test_code_blocks_lists_and_tables_survive():
    html = render_filter(MARKDOWN)
    found = tags(html)
    for tag in ("h1", "strong", "em", "code", "s", "ul", "ol", "li", "pre", "table", "thead", "tbody"):
        assert tag in found, f"<{tag}> missing from {html}"
    assert found.count("th") == 2 and found.count("td") == 4
    assert found.count("li") == 4
    # Code keeps its text, escaped, inside <pre><code>; nothing in it became markup.
    assert (
        "<pre><code>if a &lt; b and c &gt; d:\n"
        '    print("&lt;script&gt;alert(1)&lt;/script&gt;")\n</code></pre>' in html
    )
    assert "<code>inline &lt;code&gt;</code>" in html
    assert "<td>deepseek</td>" in html
    assert "text.<br>\nA second line." in html  # a single newline is a line break, as models mean it
    # Links open elsewhere, without the page's referrer or opener.
    (link,) = [attrs for tag, attrs in elements(html) if tag == "a"]
    assert link == {
        "href": "https://example.com/docs",
        "title": "The docs",
        "target": "_blank",
        "rel": "nofollow noopener noreferrer",
    }
    assert_inert(html)


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(document.cookie)</script>",
        "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
        "<img src=x onerror=alert(1)>",
        '<a href="https://example.com" onclick="alert(1)">click</a>',
        "<div onmouseover=alert(1)>hover</div>",
        "<svg onload=alert(1)><circle/></svg>",
        '<iframe src="javascript:alert(1)"></iframe>',
        "<style>body{display:none}</style>",
        '<form action="https://evil.example"><input name=x></form>',
        "<details open ontoggle=alert(1)>",
        "**bold <b onclick=alert(1)>inline</b>**",
        "```\n</code></pre><script>alert(1)</script>\n```",
    ],
)
def test_raw_html_in_model_output_never_becomes_markup(hostile):
    html = render_filter(hostile)
    assert_inert(html)
    assert "<script" not in html.lower()
    # Raw HTML is shown as the text the model wrote, escaped.
    assert "&lt;" in html


@pytest.mark.parametrize(
    "hostile",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](  javascript:alert(1)  )",
        "[x](&#106;avascript:alert(1))",
        "[x](&#x6A;avascript&#x3A;alert(1))",
        "[x](java%0Ascript:alert(1))",
        "[x](vbscript:msgbox(1))",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](file:///etc/passwd)",
        "<javascript:alert(1)>",
        "[x][ref]\n\n[ref]: javascript:alert(1)",
        "![x](javascript:alert(1))",
        "[x](/logout/)",  # relative links would point into Pantheon itself
        "[x](//evil.example/path)",
    ],
)
def test_script_and_other_non_web_urls_are_stripped(hostile):
    html = render_filter(hostile)
    assert_inert(html)
    for tag, attrs in elements(html):
        if tag == "a":
            assert "href" not in attrs, html


def test_images_are_links_never_loaded():
    html = render_filter("![chart](https://tracker.example/pixel.png)")
    assert "img" not in tags(html)
    assert 'href="https://tracker.example/pixel.png"' in html
    assert_inert(html)


def test_the_sanitizer_alone_strips_what_markdown_might_let_through():
    """The second wall on its own: if markdown-it ever emitted raw HTML, nh3 still cleans it."""
    html = sanitize_html(
        '<p onclick="x()">hi <a href="javascript:alert(1)" onfocus="y()">a</a>'
        '<a href="https://ok.example" style="color:red" class="c">ok</a></p>'
        "<script>alert(1)</script><img src=x onerror=alert(1)><iframe src=https://e.example></iframe>"
        '<table><tr><td style="x" onclick="y">1</td></tr></table>'
    )
    assert_inert(html)
    assert "alert(1)" not in html  # script content is dropped, not kept as text
    assert '<a href="https://ok.example" target="_blank" rel="nofollow noopener noreferrer">ok</a>' in html
    assert "<td>1</td>" in html


def test_plain_text_and_empty_values():
    assert render_filter("") == ""
    assert render_filter(None) == ""
    assert render_filter("Four.") == "<p>Four.</p>\n"
    assert render_markdown("5 < 6 & 7 > 3") == "<p>5 &lt; 6 &amp; 7 &gt; 3</p>\n"


def test_the_filter_output_is_not_escaped_again():
    html = Template("{% load chat_markdown %}<div>{{ value|markdown }}</div>").render(
        Context({"value": "**x** <b>"})
    )
    assert html == "<div><p><strong>x</strong> &lt;b&gt;</p>\n</div>"
