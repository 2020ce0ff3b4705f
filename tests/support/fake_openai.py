"""A local OpenAI-compatible server: `POST /v1/chat/completions` with a `usage` block.

The real `langchain-openai` client talks to it through `OPENAI_BASE_URL`.
When the request offers tools and no tool result has come back yet, it can
answer with `tool_calls`; it can also fail for chosen models.
"""

from __future__ import annotations

import json
import time

from tests.support.http_fake import JSONServer


class FakeOpenAI(JSONServer):
    def __init__(
        self,
        *,
        prompt_tokens: int = 123,
        completion_tokens: int = 45,
        reply: str = "Answer from the fake OpenAI server.",
        tool_calls: list[tuple[str, dict]] | None = None,
        fail_models: set[str] | frozenset[str] = frozenset(),
        omit_usage: bool = False,
        repeat_tools: bool = False,
    ) -> None:
        super().__init__()
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.reply = reply
        self.tool_calls = tool_calls or []
        self.fail_models = set(fail_models)
        self.omit_usage = omit_usage
        # Keep asking for tools even after results came back (a runaway model).
        self.repeat_tools = repeat_tools

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def completions(self) -> list[dict]:
        return [r["body"] for r in self.requests if r["path"] == "/v1/chat/completions"]

    def respond(self, path: str, headers: dict, body: dict | None) -> tuple[int, dict]:
        if path != "/v1/chat/completions" or not isinstance(body, dict):
            return 404, {"error": {"message": "not found", "type": "invalid_request_error"}}
        if headers.get("authorization", "") == "":
            return 401, {"error": {"message": "missing key", "type": "invalid_request_error"}}
        model = body.get("model", "")
        if model in self.fail_models:
            return 500, {"error": {"message": f"{model} is down", "type": "server_error"}}
        message: dict = {"role": "assistant", "content": self.reply}
        finish = "stop"
        offered = {tool["function"]["name"] for tool in body.get("tools", [])}
        answered_tools = body["messages"][-1].get("role") == "tool"
        calls = [(name, args) for name, args in self.tool_calls if name in offered]
        if calls and (self.repeat_tools or not answered_tools):
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{len(self.requests)}_{i}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                    for i, (name, args) in enumerate(calls, start=1)
                ],
            }
            finish = "tool_calls"
        answer = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        if not self.omit_usage:
            answer["usage"] = {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            }
        return 200, answer
