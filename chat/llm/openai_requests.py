"""OpenAI-protocol calls send LangChain's request body as built, without the SDK's parameter transform.

The OpenAI SDK runs every `chat.completions.create` body through
`maybe_transform`, which walks each message against every member of the
message-type union to apply key aliases and date/file formats. The chat
request types have none of those, and LangChain hands the SDK a body that is
already plain JSON (dicts, lists, strings, numbers), so the walk returns what
it was given — after 2.6 ms of CPU for a 22-message conversation (ten turns of
history), a quarter of a provider turn's CPU in the app
(docs/decisions.md, "OpenAI-protocol requests skip the SDK's transform").

`JSONReadyCompletions` is the SDK's own `Completions` resource with `create`
posting the body as given: the same endpoint, headers, retries, timeouts,
error classes, raw-response wrapper (LangChain reads headers through it),
response parsing and streaming. `tests/chat/test_openai_requests.py` checks
that the provider receives the same JSON document (the transform only
reorders keys) and headers as from the stock SDK, for plain, tool-calling,
tool-result and streamed requests, and that answers, usage and errors read
the same.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_openai.chat_models.base import BaseChatOpenAI
from openai import NOT_GIVEN, Stream
from openai._base_client import make_request_options
from openai.resources.chat.completions import Completions
from openai.types.chat import ChatCompletion, ChatCompletionChunk


class JSONReadyCompletions(Completions):
    """`client.chat.completions` for a body that is already JSON: posted as it is."""

    def create(  # type: ignore[override]  # keyword parameters are passed through, not listed
        self,
        *,
        extra_headers: Any = None,
        extra_query: Any = None,
        extra_body: Any = None,
        timeout: Any = NOT_GIVEN,
        **body: Any,
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        return self._post(
            "/chat/completions",
            body=body,
            options=make_request_options(
                extra_headers=extra_headers, extra_query=extra_query, extra_body=extra_body, timeout=timeout
            ),
            cast_to=ChatCompletion,
            stream=bool(body.get("stream")),
            stream_cls=Stream[ChatCompletionChunk],
        )


def send_bodies_as_built(model: BaseChatModel) -> BaseChatModel:
    """Give an OpenAI-protocol LangChain model (OpenAI, DeepSeek) the JSON-ready completions resource."""
    if isinstance(model, BaseChatOpenAI) and model.root_client is not None:
        model.client = JSONReadyCompletions(model.root_client)
    return model
