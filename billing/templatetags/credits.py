"""Template filters for showing credit figures."""

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def multiplier(value) -> str:
    """A price multiplier without trailing zeros: 2.0000 → 2, 1.5000 → 1.5."""
    if value is None or value == "":
        return ""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return format(number.normalize(), "f")


@register.filter
def lookup(mapping, key):
    """`mapping[key]` in a template, or None."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None
