"""The tools an agent may call during a turn, one module per tool.

Nothing here imports a model library: `chat.llm` binds these to a model.
"""

from __future__ import annotations

from chat.tools import file_parse, file_read, web_search
from chat.tools.base import Tool, ToolError

__all__ = ["Tool", "ToolError", "tools_for_turn"]


def tools_for_turn(*, user_id: int) -> list[Tool]:
    """File tools over the user's own uploads; web search only when it is configured."""
    tools = [file_read.make_tool(user_id=user_id), file_parse.make_tool(user_id=user_id)]
    if web_search.is_enabled():
        tools.append(web_search.make_tool())
    return tools
