"""The tools an agent may call during a turn, one module per tool.

Nothing here imports a model library: `chat.llm` binds these to a model.
"""

from __future__ import annotations

from chat.tools import file_parse, file_read, web_search
from chat.tools.base import Tool, ToolError

__all__ = ["Tool", "ToolError", "tools_for_turn"]


def tools_for_turn(*, user_id: int, with_files: bool = True) -> list[Tool]:
    """File tools over the user's own uploads (when the turn attaches files: the prompt is where a
    model learns their ids); web search only when it is configured.

    A tool a turn cannot use would cost every call its schema in input tokens (and CPU).
    """
    tools = (
        [file_read.make_tool(user_id=user_id), file_parse.make_tool(user_id=user_id)] if with_files else []
    )
    if web_search.is_enabled():
        tools.append(web_search.make_tool())
    return tools
