"""`web_search` through tavily-python, offered only when TAVILY_API_KEY is set.

tavily-python 0.8.5 sends the key as `Authorization: Bearer …` (a session
header) and never in the JSON body, so the stock `TavilyClient` is used as is;
tests/chat/test_tools.py asserts both against a local Tavily-protocol server.
"""

from __future__ import annotations

import functools

import requests
from django.conf import settings
from tavily import TavilyClient
from tavily.errors import (
    BadRequestError,
    ForbiddenError,
    InvalidAPIKeyError,
    MissingAPIKeyError,
    UsageLimitExceededError,
)
from tavily.errors import TimeoutError as TavilyTimeout

from chat.tools.base import Tool, ToolError, require_text, tool_result

NAME = "web_search"
SEARCH_TIMEOUT_SECONDS = 20
# What a failed search tells the model; the turn itself goes on.
SEARCH_ERRORS = (
    BadRequestError,
    ForbiddenError,
    InvalidAPIKeyError,
    MissingAPIKeyError,
    TavilyTimeout,
    UsageLimitExceededError,
    requests.RequestException,
)


@functools.lru_cache(maxsize=4)
def _client(api_key: str, base_url: str) -> TavilyClient:
    # One client (one pooled HTTP session) per process and configuration.
    return TavilyClient(api_key=api_key, api_base_url=base_url.rstrip("/"))


def client() -> TavilyClient:
    return _client(settings.TAVILY_API_KEY, settings.TAVILY_BASE_URL)


def is_enabled() -> bool:
    return bool(settings.TAVILY_API_KEY)


def search(query: str) -> str:
    try:
        found = client().search(
            query, max_results=settings.WEB_SEARCH_MAX_RESULTS, timeout=SEARCH_TIMEOUT_SECONDS
        )
    except SEARCH_ERRORS as exc:
        raise ToolError("search_failed", f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(found, dict) or not isinstance(found.get("results", []), list):
        raise ToolError("search_failed", "the search service answered something other than results")
    results = [
        {
            "title": item.get("title", ""),
            "url": item.get("url", ""),
            "content": str(item.get("content") or "")[:800],
        }
        for item in found.get("results", [])
        if isinstance(item, dict)
    ]
    return tool_result({"query": query, "results": results})


def make_tool() -> Tool:
    return Tool(
        name=NAME,
        description="Search the web for current information. Returns titles, URLs and snippets.",
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string", "description": "what to search for"}},
            "required": ["query"],
        },
        run=lambda arguments: search(require_text(arguments, "query")),
    )
