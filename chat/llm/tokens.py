"""Token counting: what a model call costs when its provider did not say.

A call is billed from the provider's reported usage. When a stream is cut short
(the user pressed Stop, the client went away, the provider sent no usage) it is
billed from an estimate instead, and the pre-send quote uses the same counts.
`tokenizer_for(alias)` names the counter that applies to an alias right now:

- ``"offline"``: the offline model's own tokenizer (`count_tokens`: words and
  punctuation marks). It is exact: the offline model reports these counts as its
  usage, over the text `offline_prompt_text` builds.
- ``"o200k_base"``: tiktoken's o200k_base, the encoding of OpenAI's gpt-4o
  family, exact for text. DeepSeek (an OpenAI-compatible API) is counted with it
  too; its own 128k-vocabulary tokenizer differs by a few percent on English.
- ``"o200k_base*1.20"`` (anthropic) and ``"o200k_base*1.00"`` (google_genai):
  neither provider ships a tokenizer that runs offline, so their counts are
  o200k_base counts times a stated factor, rounded up (see
  `APPROXIMATION_PERCENT` for the known error).

The o200k_base vocabulary ships in `chat/llm/encodings/` (tiktoken's MIT
licence beside it) and is checked against the sha256 tiktoken itself expects:
tiktoken would otherwise download it on first use, and counting must never
touch the network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tiktoken
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """The offline model's tokenizer: words and punctuation marks, counted exactly."""
    return len(TOKEN_RE.findall(text))


# --- The offline model's input ------------------------------------------------


def offline_message_text(message: BaseMessage) -> str:
    """One message as the offline model reads it: `role: text` (+ its tool calls as JSON)."""
    text = str(message.text)
    if isinstance(message, AIMessage) and message.tool_calls:
        text += " " + json.dumps([{"name": c["name"], "args": c["args"]} for c in message.tool_calls])
    return f"{message.type}: {text}"


def offline_prompt_text(messages: Sequence[BaseMessage], tools: Sequence[Mapping[str, Any]] = ()) -> str:
    """Everything the offline model reads for one call; its input tokens count this text."""
    read = "\n".join(offline_message_text(message) for message in messages)
    if tools:
        read += "\n" + json.dumps(list(tools), sort_keys=True)
    return read


# --- o200k_base, loaded from the shipped file -----------------------------------

OFFLINE = "offline"
O200K_BASE = "o200k_base"
O200K_BASE_FILE = Path(__file__).resolve().parent / "encodings" / "o200k_base.tiktoken"
# The hash tiktoken_ext/openai_public.py expects for this file.
O200K_BASE_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# From tiktoken_ext.openai_public.o200k_base(), which cannot be called: it downloads the file.
O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
O200K_SPECIAL_TOKENS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}

_o200k_base: tiktoken.Encoding | None = None
_o200k_base_lock = threading.Lock()


def load_bpe_ranks(path: Path, expected_sha256: str) -> dict[bytes, int]:
    """A `.tiktoken` file's ranks, as `tiktoken.load.load_tiktoken_bpe` parses them.

    Not that function itself: it copies every file it reads into tiktoken's
    download cache (`TIKTOKEN_CACHE_DIR`, else the temp directory) and fails if
    that directory is not writable. A file that is not the expected one is refused.
    """
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise RuntimeError(f"{path} has sha256 {actual}, expected {expected_sha256}")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def o200k_base() -> tiktoken.Encoding:
    """The o200k_base Encoding, built once per process from the shipped file (about 0.6 s, 75 MiB)."""
    global _o200k_base
    encoding = _o200k_base
    if encoding is None:
        with _o200k_base_lock:
            encoding = _o200k_base
            if encoding is None:
                encoding = tiktoken.Encoding(
                    O200K_BASE,
                    pat_str=O200K_PAT_STR,
                    mergeable_ranks=load_bpe_ranks(O200K_BASE_FILE, O200K_BASE_SHA256),
                    special_tokens=O200K_SPECIAL_TOKENS,
                )
                _o200k_base = encoding
    return encoding


def _o200k_count(text: str) -> int:
    # Special-token strings in user text are ordinary text, never control tokens.
    return len(o200k_base().encode_ordinary(text)) if text else 0


# --- Which counter an alias gets --------------------------------------------------

# Providers whose own tokenizer cannot run here: o200k_base counts times this many percent.
# anthropic, 120: Anthropic publishes no tokenizer for Claude 3 and later (only a
#   count_tokens API call). Published comparisons of Claude 3.5 Sonnet against gpt-4o
#   on the same inputs found Claude's counts higher by about 16% for English prose,
#   21% for maths and 30% for code; 1.20 sits in that range, so the estimate is
#   within about ±10% for typical chat text, low for code-heavy text.
# google_genai, 100: Gemini's SentencePiece vocabulary (about 256k entries) is close
#   to o200k_base in size; reported differences on English are within about ±15%,
#   in either direction, with no consistent sign, so no correction is applied.
# Neither factor was measured here (it would take the providers' counting APIs).
APPROXIMATION_PERCENT = {"anthropic": 120, "google_genai": 100}


def _counter(alias: str) -> tuple[str, int]:
    """(counter name, percent of the o200k_base count) for the provider that would answer `alias` now."""
    # registry imports the offline model, which imports this module.
    from chat.llm.registry import provider_for

    provider = provider_for(alias)
    if provider == OFFLINE:
        return OFFLINE, 100
    percent = APPROXIMATION_PERCENT.get(provider)
    if percent is None:
        return O200K_BASE, 100
    return f"{O200K_BASE}*{percent / 100:.2f}", percent


def tokenizer_for(alias: str) -> str:
    """Which counter applies to `alias`: "offline", "o200k_base", or "o200k_base*<factor>"."""
    return _counter(alias)[0]


def _scaled(count: int, percent: int) -> int:
    return -(-count * percent // 100)  # rounded up


def text_tokens(alias: str, text: str) -> int:
    """Tokens in `text` (e.g. the reply received so far) by the counter for `alias`."""
    counter, percent = _counter(alias)
    if counter == OFFLINE:
        return count_tokens(text)
    return _scaled(_o200k_count(text), percent)


# --- OpenAI's chat format ---------------------------------------------------------
# OpenAI cookbook, "How to count tokens with tiktoken" (gpt-4o family): each message
# costs 3 tokens plus its role, name and content; a name costs 1 more; the reply is
# primed with 3 (<|start|>assistant<|message|>). These match the API's prompt_tokens
# for plain messages. Tool calls and tool results are not documented: like
# langchain-openai's counter we add a call's name and JSON arguments and 3 tokens for
# a result's tool_call_id. Images and files in content are not counted.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_PER_TOOL_CALL_ID = 3
REPLY_PRIMING_TOKENS = 3
# Tool definitions, same source: per function, its properties, enums, and once at the end.
FUNCTION_INIT, PROPERTIES_INIT, PROPERTY_KEY, ENUM_INIT, ENUM_ITEM, FUNCTIONS_END = 7, 3, 3, -3, 3, 12
OPENAI_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def _openai_message_tokens(message: BaseMessage) -> int:
    count = TOKENS_PER_MESSAGE + _o200k_count(OPENAI_ROLES.get(message.type, message.type))
    count += _o200k_count(str(message.text))
    if isinstance(message, ToolMessage):
        # A tool result is sent as role, content and tool_call_id only (no name).
        return count + TOKENS_PER_TOOL_CALL_ID
    if message.name:
        count += TOKENS_PER_NAME + _o200k_count(message.name)
    if isinstance(message, AIMessage):
        for call in message.tool_calls:
            count += _o200k_count(call["name"]) + _o200k_count(json.dumps(call["args"], ensure_ascii=False))
    return count


def _openai_tools_tokens(tools: Sequence[Mapping[str, Any]]) -> int:
    if not tools:
        return 0
    count = FUNCTIONS_END
    for tool in tools:
        function = tool.get("function", tool)
        description = str(function.get("description", "")).removesuffix(".")
        count += FUNCTION_INIT + _o200k_count(f"{function['name']}:{description}")
        properties = (function.get("parameters") or {}).get("properties") or {}
        if properties:
            count += PROPERTIES_INIT
        for key, schema in properties.items():
            count += PROPERTY_KEY
            if "enum" in schema:
                count += ENUM_INIT + sum(ENUM_ITEM + _o200k_count(str(item)) for item in schema["enum"])
            described = str(schema.get("description", "")).removesuffix(".")
            count += _o200k_count(f"{key}:{schema.get('type', '')}:{described}")
    return count


def prompt_tokens(alias: str, messages: Sequence[BaseMessage], *, tools: Sequence[Any] = ()) -> int:
    """Input tokens of one call to `alias` with `messages` (and `tools` bound, if any).

    `tools` are what `bind_tools` takes (e.g. `Tool.spec()` dicts). Offline, this is
    exactly the usage the offline model reports; otherwise OpenAI's chat-format
    accounting over o200k_base, scaled for the approximated providers.
    """
    counter, percent = _counter(alias)
    specs = [convert_to_openai_tool(tool) for tool in tools]
    if counter == OFFLINE:
        return count_tokens(offline_prompt_text(messages, specs))
    count = sum(_openai_message_tokens(message) for message in messages)
    count += REPLY_PRIMING_TOKENS + _openai_tools_tokens(specs)
    return _scaled(count, percent)


def message_tokens(alias: str, message: BaseMessage) -> int:
    """Tokens a model wrote in `message` (its text and its tool calls) by the counter for `alias`.

    For the offline model this is exactly the output it reports for that message.
    """
    written = offline_message_text(message).partition(": ")[2]
    return text_tokens(alias, written)
