"""A local Tavily-protocol server: `POST /search`.

It accepts a request only when the key arrives as `Authorization: Bearer <key>`
and is absent from the JSON body (401 / 400 otherwise), and records every
request so tests can assert both.
"""

from __future__ import annotations

from tests.support.http_fake import JSONServer


class FakeTavily(JSONServer):
    def __init__(self, *, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key

    def respond(self, path: str, headers: dict, body: dict | None) -> tuple[int, dict]:
        if path != "/search":
            return 404, {"detail": {"error": "not found"}}
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"detail": {"error": "Unauthorized: missing or invalid API key."}}
        if not isinstance(body, dict) or "api_key" in body or self.api_key in str(body):
            return 400, {"detail": {"error": "the API key must not be sent in the body"}}
        query = body.get("query", "")
        return 200, {
            "query": query,
            "answer": None,
            "images": [],
            "response_time": 0.01,
            "results": [
                {
                    "title": f"Result for {query}",
                    "url": "https://example.test/result",
                    "content": "Pantheon search result snippet.",
                    "score": 0.9,
                }
            ],
        }
