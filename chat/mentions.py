"""@mentions: who a person named in their message, parsed by Pantheon, never by a model.

Grammar (also shown next to the composer):

- A mention is `@` followed by an alias: letters, digits, `.`, `_` and `-`,
  starting with a letter or digit, e.g. `@gpt-4o`, `@claude-sonnet`.
- It starts a word: the `@` is at the start of the message or after a
  character that is not a letter, digit or `@` (so `me@example.com` is no mention).
- It ends at the first other character; trailing `.`, `_` or `-` are
  punctuation, not part of the name (`@gpt-4o.` names gpt-4o). Case does not
  matter (`@GPT-4o`).
- `@all` names every agent of the room.
- A mention of a model alias that is not an agent of the room is an error
  (400, naming the room's agents); any other `@word` (a person, a handle) is
  plain text.

Named agents answer in the room's order; no routing call is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MENTION_RE = re.compile(r"(?<![\w@])@([A-Za-z0-9][A-Za-z0-9._-]*)")
EVERYONE = "all"


@dataclass(frozen=True)
class Mentions:
    agents: list[str]  # room agents named, in the room's order
    outside: list[str]  # model aliases named that are not agents of the room


def parse_mentions(content: str, *, room_agents: list[str], known_aliases: Iterable[str]) -> Mentions:
    by_name = {alias.lower(): alias for alias in room_agents}
    known = {alias.lower(): alias for alias in known_aliases}
    named: set[str] = set()
    outside: list[str] = []
    for match in MENTION_RE.finditer(content):
        name = match.group(1).rstrip("._-").lower()
        if name == EVERYONE:
            named.update(room_agents)
        elif name in by_name:
            named.add(by_name[name])
        elif name in known and known[name] not in outside:
            outside.append(known[name])
    return Mentions(agents=[alias for alias in room_agents if alias in named], outside=outside)
