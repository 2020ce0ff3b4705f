"""Helpers for browser tests of the chat page: log in, watch the answers stream, read the result."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal

from tests.factories import DEFAULT_PASSWORD

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# Records, on every change to the conversation, each streaming bubble's text and box.
WATCH_STREAMING = """() => {
  window.__snapshots = [];
  const snap = () => {
    const bubbles = [...document.querySelectorAll('[data-testid="streaming-answer"]')];
    if (!bubbles.length) return;
    window.__snapshots.push({
      stopVisible: !document.getElementById('composer-stop').hidden,
      bubbles: bubbles.map(b => {
        const box = b.getBoundingClientRect();
        return {
          model: b.dataset.model,
          text: b.querySelector('.bubble__body').textContent,
          done: b.classList.contains('bubble--done'),
          top: Math.round(box.top + window.scrollY),
          left: Math.round(box.left),
          right: Math.round(box.right),
        };
      }),
    });
  };
  new MutationObserver(snap).observe(document.getElementById('conversation'),
    { subtree: true, childList: true, characterData: true, attributes: true });
}"""


def log_in(page, base: str, username: str, password: str = DEFAULT_PASSWORD) -> None:
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{base}/rooms/")


def watch_streaming(page) -> None:
    page.evaluate(WATCH_STREAMING)


def open_room(browser, base: str, room, *, width: int = 1280, console_errors: bool = True):
    """Log the room's owner in, open the room and watch its bubbles; (page, the page's errors).

    The errors are uncaught exceptions, and console errors unless `console_errors` is False.
    """
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if console_errors:
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    log_in(page, base, room.owner.username)
    page.goto(f"{base}/rooms/{room.pk}/")
    watch_streaming(page)
    return page, errors


def snapshots(page) -> list[dict]:
    return page.evaluate("window.__snapshots")


def texts_seen(snaps: list[dict], model: str) -> list[str]:
    """The distinct texts one agent's streaming bubble showed, in order."""
    seen: list[str] = []
    for snap in snaps:
        for bubble in snap["bubbles"]:
            if bubble["model"] == model and bubble["text"] and (not seen or seen[-1] != bubble["text"]):
                seen.append(bubble["text"])
    return seen


def side_by_side(snap: dict) -> bool:
    """Two or more bubbles in one row: same top, each starting right of the one before."""
    bubbles = snap["bubbles"]
    return (
        len(bubbles) >= 2
        and len({b["top"] for b in bubbles}) == 1
        and all(a["right"] <= b["left"] for a, b in itertools.pairwise(bubbles))
    )


def both_filling(snap: dict) -> bool:
    """Two bubbles, each with some text and neither finished."""
    bubbles = snap["bubbles"]
    return len(bubbles) == 2 and all(b["text"] and not b["done"] for b in bubbles)


def stacked(snap: dict) -> bool:
    """Bubbles one under the other (a phone): same left, each below the one before."""
    bubbles = snap["bubbles"]
    return (
        len(bubbles) >= 2
        and len({b["left"] for b in bubbles}) == 1
        and all(a["top"] < b["top"] for a, b in itertools.pairwise(bubbles))
    )


def header_balance(page) -> Decimal:
    return Decimal(page.locator('[data-testid="header-balance"]').inner_text().strip())


def wait_for_turns(page, count: int, timeout: float = 60_000) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=\"turn\"]').length >= n", arg=count, timeout=timeout
    )
