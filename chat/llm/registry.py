"""Alias → chat model. A provider is used only when its API key is set.

`settings.CHAT_MODEL_ALIASES` maps an alias to (LangChain provider, provider
model). Models are built once per process and configuration and reused: the
provider clients keep their HTTP connection pools between turns.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from django.conf import settings
from langchain.chat_models import init_chat_model
from langchain_core.language_models import BaseChatModel

from chat.llm.offline import OfflineChatModel
from chat.llm.openai_requests import send_bodies_as_built

DEFAULT_ALIAS = "default"
# Providers whose LangChain class must be told to report usage in a stream (others always do).
STREAM_USAGE_PROVIDERS = {"openai", "deepseek"}
OFFLINE = "offline"
# Which setting holds each provider's key.
PROVIDER_KEY_SETTINGS = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "google_genai": "GOOGLE_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
}


@dataclass(frozen=True)
class ResolvedModel:
    alias: str
    provider: str
    # What the usage row records, e.g. "openai/gpt-4o" or "offline/gpt-4o".
    provider_model: str
    chat_model: BaseChatModel


def known_aliases() -> set[str]:
    return set(settings.CHAT_MODEL_ALIASES)


def _configured(alias: str) -> tuple[str, str]:
    """(provider, provider model) for an alias; an unknown alias is the default one."""
    table = settings.CHAT_MODEL_ALIASES
    return table.get(alias) or table[DEFAULT_ALIAS]


def _api_key(provider: str) -> str:
    return getattr(settings, PROVIDER_KEY_SETTINGS.get(provider, ""), "")


def provider_for(alias: str) -> str:
    """The provider that answers `alias` now ("offline" when its key is not set), without building a model."""
    provider, _model = _configured(alias)
    return provider if _api_key(provider) else OFFLINE


def resolve(alias: str) -> ResolvedModel:
    provider, model = _configured(alias)
    api_key = _api_key(provider)
    if not api_key:
        offline = _offline_model(alias, settings.CREDIT_HOLD_OUTPUT_TOKENS)
        return ResolvedModel(alias, OFFLINE, f"{OFFLINE}/{alias}", offline)
    base_url = settings.OPENAI_BASE_URL if provider == "openai" else ""
    chat_model = _provider_model(
        provider,
        model,
        api_key,
        base_url,
        settings.LLM_TIMEOUT_SECONDS,
        settings.LLM_MAX_RETRIES,
        settings.CREDIT_HOLD_OUTPUT_TOKENS,
    )
    return ResolvedModel(alias, provider, f"{provider}/{model}", chat_model)


@functools.lru_cache(maxsize=64)
def _offline_model(alias: str, max_tokens: int) -> OfflineChatModel:
    return OfflineChatModel(alias=alias, max_tokens=max_tokens)


@functools.lru_cache(maxsize=64)
def _provider_model(
    provider: str, model: str, api_key: str, base_url: str, timeout: float, max_retries: int, max_tokens: int
) -> BaseChatModel:
    # The output cap makes a turn's hold a true upper bound of its cost (CREDIT_HOLD_OUTPUT_TOKENS).
    options: dict = {
        "api_key": api_key,
        "timeout": timeout,
        "max_retries": max_retries,
        "max_tokens": max_tokens,
    }
    if base_url:
        options["base_url"] = base_url
    if provider in STREAM_USAGE_PROVIDERS:
        # Ask for the usage block at the end of a stream (OpenAI `stream_options.include_usage`).
        options["stream_usage"] = True
    return send_bodies_as_built(init_chat_model(model, model_provider=provider, **options))
