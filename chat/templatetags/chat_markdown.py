"""`{{ answer.content|markdown }}`: a model's answer as sanitized HTML (see chat.markdown)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString, mark_safe

from chat.markdown import render_markdown

register = template.Library()


@register.filter
def markdown(value: object) -> SafeString:
    # Safe to mark: render_markdown escapes raw HTML and then sanitizes what Markdown made.
    return mark_safe(render_markdown("" if value is None else str(value)))  # noqa: S308
