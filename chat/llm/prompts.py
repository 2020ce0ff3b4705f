"""The prompts the agents and the manager see. Plain text, no model library."""

from __future__ import annotations

ROUTING_MARKER = "You route messages in a Pantheon chat room."
ATTACHMENTS_HEADER = "Attached files (read them with the file tools):"


def routing_system(agents: list[str]) -> str:
    return (
        f"{ROUTING_MARKER}\n"
        f"Agents: {', '.join(agents)}\n"
        "Decide which of these agents should answer the user's message: the ones best suited, "
        'at least one. Reply with only a JSON object, e.g. {"agents": ["gpt-4o"]}.'
    )


def agent_system(alias: str, agents: list[str]) -> str:
    others = [agent for agent in agents if agent != alias]
    company = f" together with {', '.join(others)}" if others else ""
    return (
        f"You are {alias}, an AI agent answering in a Pantheon chat room{company}. "
        "Answer the user's latest message helpfully and concisely. Use the tools when they help."
    )


def attachment_line(*, file_id: int, name: str, content_type: str, size: int) -> str:
    return f"- [file #{file_id}] {name} ({content_type}, {size} bytes)"


def user_prompt(content: str, attachment_lines: list[str]) -> str:
    if not attachment_lines:
        return content
    return "\n".join([content, "", ATTACHMENTS_HEADER, *attachment_lines])
