"""The model layer: the only package that imports LangChain.

Callers get plain dataclasses back (`LLMCall`, `ToolCallRecord`,
`AgentAnswer`, `Routing`) and never see a provider or a LangChain type.
"""

from chat.llm.agent import AgentAnswer, ChatLine, LLMCall, Routing, ToolCallRecord, route_turn, run_agent
from chat.llm.prompts import attachment_line, user_prompt
from chat.llm.registry import known_aliases, resolve
from chat.llm.tokens import count_tokens

__all__ = [
    "AgentAnswer",
    "ChatLine",
    "LLMCall",
    "Routing",
    "ToolCallRecord",
    "attachment_line",
    "count_tokens",
    "known_aliases",
    "resolve",
    "route_turn",
    "run_agent",
    "user_prompt",
]
