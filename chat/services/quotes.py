"""What a turn may cost, before it runs: the quote, and (enforce mode) the hold it places.

The high end is a true upper bound, call by call: every call the turn may make
(each answering agent, each tool round up to CHAT_MAX_AGENT_STEPS) reads its
prompt (history and attachments included, counted with that model's
tokenizer), the replies before it (each at most CREDIT_HOLD_OUTPUT_TOKENS,
the `max_tokens` every provider call is made with) and the tool results
before it (each round at most the attached files' text, capped by
FILE_READ_MAX_CHARS, plus CHAT_TOOL_RESULT_TOKENS: the agent loop cuts what
would pass it), and writes at most CREDIT_HOLD_OUTPUT_TOKENS. The routing
call is unmetered and costs nothing. The low end assumes no tool round and an
answer of CREDIT_QUOTE_TYPICAL_OUTPUT_TOKENS. The hold is exactly the high end.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings

from accounts.models import User
from billing.meter import get_pricing_snapshot
from billing.services import CallBound, usage_bound
from chat import payloads
from chat.llm.agent import agent_call_bounds
from chat.llm.tokens import text_tokens
from chat.models import Turn
from chat.tools import tools_for_turn

if TYPE_CHECKING:  # turns imports this module
    from chat.services.turns import TurnRequest


@dataclass(frozen=True)
class AgentQuote:
    model_alias: str
    multiplier: Decimal
    input_tokens: int  # the first call's prompt
    max_output_tokens: int
    credits_low: Decimal
    credits_high: Decimal


@dataclass(frozen=True)
class TurnQuote:
    routed_by: str
    agents: list[AgentQuote]

    @property
    def credits_low(self) -> Decimal:
        return sum((agent.credits_low for agent in self.agents), Decimal(0))

    @property
    def credits_high(self) -> Decimal:
        return sum((agent.credits_high for agent in self.agents), Decimal(0))

    def payload(self) -> dict[str, Any]:
        return {
            "routing": {
                "by": str(self.routed_by),
                "agents": [agent.model_alias for agent in self.agents],
                # Before the manager has chosen, every agent may answer: the quote covers them all.
                "upper_bound": self.routed_by == Turn.RoutedBy.MANAGER,
            },
            "agents": [
                {
                    "model_alias": agent.model_alias,
                    "multiplier": payloads.decimal_str(agent.multiplier),
                    "input_tokens": agent.input_tokens,
                    "max_output_tokens": agent.max_output_tokens,
                    "credits_low": payloads.decimal_str(agent.credits_low),
                    "credits_high": payloads.decimal_str(agent.credits_high),
                }
                for agent in self.agents
            ],
            "credits_low": payloads.decimal_str(self.credits_low),
            "credits_high": payloads.decimal_str(self.credits_high),
            "assumptions": {
                "typical_output_tokens": settings.CREDIT_QUOTE_TYPICAL_OUTPUT_TOKENS,
                "max_output_tokens": settings.CREDIT_HOLD_OUTPUT_TOKENS,
                "max_agent_steps": settings.CHAT_MAX_AGENT_STEPS,
                "routing_call": "free (unmetered)" if self.routed_by == Turn.RoutedBy.MANAGER else "none",
            },
        }


def tool_budget_tokens(alias: str, request: TurnRequest) -> int:
    """Tool results one round may hand `alias`: the attached files' text (as the tools cap it) and more."""
    cap = settings.FILE_READ_MAX_CHARS
    files = sum(text_tokens(alias, (f.extracted_text or "")[:cap]) for f in request.files)
    return settings.CHAT_TOOL_RESULT_TOKENS + files


def turn_quote(*, user: User, request: TurnRequest, prompt: str) -> TurnQuote:
    """The quote for a validated turn body; no model is called, nothing is written."""
    snapshot = get_pricing_snapshot()
    agents = request.named_agents or list(request.context.agents)
    tools = tools_for_turn(user_id=user.pk, with_files=bool(request.files))
    quotes = []
    for alias in agents:
        bounds = agent_call_bounds(
            alias=alias,
            agents=list(request.context.agents),
            history=request.context.history,
            prompt=prompt,
            tools=tools,
            tool_budget_tokens=tool_budget_tokens(alias, request),
        )
        first_input = bounds[0][0]
        low = CallBound(alias, "agent", first_input, settings.CREDIT_QUOTE_TYPICAL_OUTPUT_TOKENS)
        quotes.append(
            AgentQuote(
                model_alias=alias,
                multiplier=snapshot.multiplier_for(alias),
                input_tokens=first_input,
                max_output_tokens=settings.CREDIT_HOLD_OUTPUT_TOKENS,
                credits_low=usage_bound(bounds=[low]),
                credits_high=usage_bound(
                    bounds=[CallBound(alias, "agent", inputs, output) for inputs, output in bounds]
                ),
            )
        )
    return TurnQuote(routed_by=request.routed_by, agents=quotes)
