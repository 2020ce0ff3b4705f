"""chat.llm.tokens: the counters behind estimated usage and cost quotes.

Reference numbers come from OpenAI's cookbook ("How to count tokens with
tiktoken"), whose published outputs were checked there against the API.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI
from tiktoken_ext import openai_public

from chat.llm import tokens
from chat.llm.offline import OfflineChatModel
from chat.llm.prompts import user_prompt
from chat.llm.registry import resolve

REPO_ROOT = Path(__file__).resolve().parents[2]
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
FAKE_KEY = "sk-test-not-a-real-key"

FILE_READ = {
    "type": "function",
    "function": {
        "name": "file_read",
        "description": "Read an uploaded file.",
        "parameters": {
            "type": "object",
            "properties": {"file_id": {"type": "integer"}},
            "required": ["file_id"],
        },
    },
}
WEB_SEARCH = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": "Search the web.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to search for."}},
            "required": ["query"],
        },
    },
}


def conversation() -> list:
    """A system prompt, a question, a tool call, its result and a follow-up."""
    return [
        SystemMessage("You are Pantheon, a careful assistant."),
        HumanMessage("Summarise the attached report, please."),
        AIMessage(
            content="",
            tool_calls=[{"name": "file_read", "args": {"file_id": 7}, "id": "call_1", "type": "tool_call"}],
        ),
        ToolMessage(
            json.dumps({"name": "report.txt", "text": "Revenue grew 12% — costs fell."}),
            tool_call_id="call_1",
            name="file_read",
        ),
        AIMessage("Revenue grew 12% while costs fell."),
        HumanMessage("Thanks! Was it better than last year?"),
    ]


@pytest.fixture
def providers(settings):
    """Every provider has a (fake) key, so each alias is counted as its provider would count it."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "DEEPSEEK_API_KEY"):
        setattr(settings, name, FAKE_KEY)
    return settings


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a token-counting test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert attempts == []


@pytest.fixture
def official_o200k_base(tmp_path, monkeypatch, no_network) -> tiktoken.Encoding:
    """tiktoken's own o200k_base, fed our file through its download cache (no network)."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    (cache / hashlib.sha1(O200K_URL.encode(), usedforsecurity=False).hexdigest()).write_bytes(
        tokens.O200K_BASE_FILE.read_bytes()
    )
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "o200k_base", raising=False)
    encoding = tiktoken.get_encoding("o200k_base")
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "o200k_base")  # others must not reuse it
    return encoding


# --- The shipped encoding ---------------------------------------------------------


def test_shipped_file_has_the_hash_tiktoken_expects():
    source = inspect.getsource(openai_public.o200k_base)
    assert f'expected_hash="{tokens.O200K_BASE_SHA256}"' in source
    assert O200K_URL in source
    data = tokens.O200K_BASE_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == tokens.O200K_BASE_SHA256
    licence = (tokens.O200K_BASE_FILE.parent / "LICENSE-tiktoken").read_text()
    assert "MIT License" in licence and "OpenAI" in licence


def test_a_file_with_another_hash_is_refused(tmp_path):
    tampered = tmp_path / "o200k_base.tiktoken"
    tampered.write_bytes(tokens.O200K_BASE_FILE.read_bytes().replace(b"IQ== 0", b"Ig== 0", 1))
    with pytest.raises(RuntimeError, match="sha256"):
        tokens.load_bpe_ranks(tampered, tokens.O200K_BASE_SHA256)


def test_ranks_are_parsed_as_tiktoken_parses_them(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's loader then neither reads nor writes a cache
    official = tiktoken.load.load_tiktoken_bpe(str(tokens.O200K_BASE_FILE), tokens.O200K_BASE_SHA256)
    assert tokens.load_bpe_ranks(tokens.O200K_BASE_FILE, tokens.O200K_BASE_SHA256) == official


def test_encoding_is_tiktokens_own_o200k_base(official_o200k_base):
    ours = tokens.o200k_base()
    assert ours.name == official_o200k_base.name == "o200k_base"
    assert ours._pat_str == official_o200k_base._pat_str
    assert ours._special_tokens == official_o200k_base._special_tokens
    assert ours.n_vocab == official_o200k_base.n_vocab == 200019
    samples = [
        "Hello, world!",
        "def f(x):\n    return x ** 2\n",
        "Ünïcödé — 日本語 🦊",
        "  spaces\t\ttabs\r\n",
    ]
    for text in samples:
        assert ours.encode_ordinary(text) == official_o200k_base.encode_ordinary(text)


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("tiktoken is great!", [83, 8251, 2488, 382, 2212, 0]),
        ("antidisestablishmentarianism", [493, 129901, 376, 160388, 21203, 2367]),
        ("2 + 2 = 4", [17, 659, 220, 17, 314, 220, 19]),
        ("お誕生日おめでとう", [8930, 9697, 243, 128225, 8930, 17693, 4344, 48669]),
    ],
)
def test_o200k_base_gives_the_published_token_ids(text, ids):
    assert tokens.o200k_base().encode_ordinary(text) == ids


def test_encoding_is_built_once_when_many_threads_ask_first(monkeypatch):
    monkeypatch.setattr(tokens, "_o200k_base", None)
    loads: list[Path] = []
    real_load = tokens.load_bpe_ranks

    def counting_load(path, expected_sha256):
        loads.append(path)
        return real_load(path, expected_sha256)

    monkeypatch.setattr(tokens, "load_bpe_ranks", counting_load)
    start = threading.Barrier(8)
    seen: list[tiktoken.Encoding] = []

    def first_use():
        start.wait()
        seen.append(tokens.o200k_base())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert loads == [tokens.O200K_BASE_FILE]
    assert len(seen) == 8 and all(encoding is seen[0] for encoding in seen)


# --- Which counter applies ----------------------------------------------------------


def test_every_alias_is_offline_without_keys(settings):
    assert {tokens.tokenizer_for(alias) for alias in settings.CHAT_MODEL_ALIASES} == {"offline"}
    assert tokens.tokenizer_for("no-such-alias") == "offline"


def test_each_provider_gets_its_counter(providers):
    assert tokens.tokenizer_for("gpt-4o") == "o200k_base"
    assert tokens.tokenizer_for("gpt-4o-mini") == "o200k_base"
    assert tokens.tokenizer_for("default") == "o200k_base"
    assert tokens.tokenizer_for("deepseek") == "o200k_base"
    assert tokens.tokenizer_for("claude-sonnet") == "o200k_base*1.20"
    assert tokens.tokenizer_for("gemini-flash") == "o200k_base*1.00"


def test_only_the_provider_with_a_key_leaves_offline(settings):
    settings.ANTHROPIC_API_KEY = FAKE_KEY
    assert tokens.tokenizer_for("claude-haiku") == "o200k_base*1.20"
    assert tokens.tokenizer_for("gpt-4o") == "offline"


# --- text_tokens ----------------------------------------------------------------------


def test_text_tokens_by_counter(providers):
    assert tokens.text_tokens("gpt-4o", "hello world") == 2
    assert tokens.text_tokens("deepseek", "tiktoken is great!") == 6
    assert tokens.text_tokens("claude-sonnet", "tiktoken is great!") == 8  # 6 × 1.2 = 7.2, rounded up
    assert tokens.text_tokens("gemini-pro", "tiktoken is great!") == 6
    for alias in ("gpt-4o", "claude-sonnet", "gemini-pro"):
        assert tokens.text_tokens(alias, "") == 0


def test_special_token_text_is_counted_as_text(providers):
    assert tokens.text_tokens("gpt-4o", "<|endoftext|>") == 7


def test_offline_text_tokens_are_the_offline_tokenizer(settings):
    assert tokens.text_tokens("gpt-4o", "Hello, world! 42 times.") == 7
    assert tokens.text_tokens("claude-sonnet", "") == 0


# --- prompt_tokens --------------------------------------------------------------------


def test_offline_estimate_equals_the_offline_models_usage():
    alias = "claude-sonnet"
    model = resolve(alias).chat_model
    assert isinstance(model, OfflineChatModel)
    specs = [FILE_READ, WEB_SEARCH]
    asked = user_prompt("Please parse the table and search for the latest news.", ["[file #3] data.csv"])
    messages = [SystemMessage("You are Pantheon."), HumanMessage(asked)]

    first = model.bind_tools(specs).invoke(messages)  # plans tool calls
    assert first.tool_calls
    assert first.usage_metadata["input_tokens"] == tokens.prompt_tokens(alias, messages, tools=specs)

    results = [
        ToolMessage(
            json.dumps({"name": "data.csv", "header": ["a", "b"], "row_count": 2}), tool_call_id=c["id"]
        )
        for c in first.tool_calls
    ]
    follow_up = [*messages, first, *results]
    second = model.bind_tools(specs).invoke(follow_up)  # answers from the results
    assert second.text and not second.tool_calls
    assert second.usage_metadata["input_tokens"] == tokens.prompt_tokens(alias, follow_up, tools=specs)
    assert second.usage_metadata["output_tokens"] == tokens.text_tokens(alias, second.text)

    plain = model.invoke(conversation())
    assert plain.usage_metadata["input_tokens"] == tokens.prompt_tokens(alias, conversation())


def test_prompt_tokens_match_openais_published_api_counts(providers):
    # The cookbook's example: the API reported 124 prompt tokens for gpt-4o and gpt-4o-mini.
    jargon = [
        SystemMessage(
            "You are a helpful, pattern-following assistant that translates corporate jargon "
            "into plain English."
        ),
        SystemMessage("New synergies will help drive top-line growth.", name="example_user"),
        SystemMessage("Things working well together will increase revenue.", name="example_assistant"),
        SystemMessage(
            "Let's circle back when we have more bandwidth to touch base on opportunities "
            "for increased leverage.",
            name="example_user",
        ),
        SystemMessage(
            "Let's talk later when we're less busy about how to do better.", name="example_assistant"
        ),
        HumanMessage(
            "This late pivot means we don't have time to boil the ocean for the client deliverable."
        ),
    ]
    assert tokens.prompt_tokens("gpt-4o", jargon) == 124
    assert tokens.prompt_tokens("gpt-4o-mini", jargon) == 124

    # With a tool bound, the API reported 101 for gpt-4o and gpt-4o-mini.
    weather_tool = {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
    weather = [
        SystemMessage("You are a helpful assistant that can answer to questions about the weather."),
        HumanMessage("What's the weather like in San Francisco?"),
    ]
    assert tokens.prompt_tokens("gpt-4o", weather, tools=[weather_tool]) == 101


def test_prompt_tokens_for_a_conversation_with_tools(providers, official_o200k_base):
    messages = conversation()
    roles = ("system", "user", "assistant", "tool", "assistant", "user")
    expected = (
        # per message: 3 + role + content; a tool result's name is not sent
        sum(3 + len(official_o200k_base.encode(role)) for role in roles)
        + sum(len(official_o200k_base.encode(str(m.text))) for m in messages)
        + len(official_o200k_base.encode("file_read")) + len(official_o200k_base.encode('{"file_id": 7}'))
        + 3  # the tool result's tool_call_id
        + 3  # reply priming
    )  # fmt: skip
    assert tokens.prompt_tokens("gpt-4o", messages) == expected

    # langchain-openai's own counter (tiktoken's encoding, same accounting) agrees.
    chat_openai = ChatOpenAI(model="gpt-4o", api_key=FAKE_KEY)
    assert chat_openai.get_num_tokens_from_messages(messages) == expected

    assert tokens.prompt_tokens("deepseek", messages) == expected
    assert tokens.prompt_tokens("claude-sonnet", messages) == -(-expected * 120 // 100)
    assert tokens.prompt_tokens("gemini-pro", messages) == expected

    with_tools = tokens.prompt_tokens("gpt-4o", messages, tools=[FILE_READ, WEB_SEARCH])
    assert with_tools == expected + (
        7 + len(official_o200k_base.encode("file_read:Read an uploaded file")) + 3
        + 3 + len(official_o200k_base.encode("file_id:integer:"))
        + 7 + len(official_o200k_base.encode("web_search:Search the web")) + 3
        + 3 + len(official_o200k_base.encode("query:string:What to search for"))
        + 12
    )  # fmt: skip


def test_an_empty_prompt_still_costs_the_reply_priming(providers):
    assert tokens.prompt_tokens("gpt-4o", []) == 3
    assert tokens.prompt_tokens("claude-sonnet", []) == 4


# --- No network, ever -----------------------------------------------------------------

NO_NETWORK_SCRIPT = textwrap.dedent(
    """
    import os
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access while counting tokens")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    import django
    django.setup()
    import tiktoken.registry
    from langchain_core.messages import HumanMessage, SystemMessage
    from chat.llm import tokens

    assert "o200k_base" not in tiktoken.registry.ENCODINGS and tokens._o200k_base is None
    assert tokens.tokenizer_for("gpt-4o") == "o200k_base"
    assert tokens.text_tokens("gpt-4o", "hello world") == 2
    assert tokens.prompt_tokens("gpt-4o", [SystemMessage("Be brief."), HumanMessage("hello world")]) > 2
    assert attempts == [], attempts
    try:
        socket.create_connection(("127.0.0.1", 9))
    except OSError:
        pass
    assert len(attempts) == 1  # the guard was live all along
    assert os.listdir(os.environ["TIKTOKEN_CACHE_DIR"]) == []
    print("counted offline")
    """
)


def test_counting_needs_no_network_and_no_tiktoken_cache(tmp_path):
    cache = tmp_path / "empty-tiktoken-cache"
    cache.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
        "PYTHONPATH": str(REPO_ROOT),
        "TIKTOKEN_CACHE_DIR": str(cache),
        "OPENAI_API_KEY": FAKE_KEY,
    }
    env.pop("DATA_GYM_CACHE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "counted offline"
    assert list(cache.iterdir()) == []
