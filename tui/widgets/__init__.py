"""The widgets of blockpool-tui, one per module."""

from __future__ import annotations

from tui.widgets.agent_list import AgentList
from tui.widgets.block_map import BlockMap
from tui.widgets.block_map_panel import BlockMapPanel
from tui.widgets.chat_input import ChatInput
from tui.widgets.chat_message import ChatMessage
from tui.widgets.chat_pane import ChatPane
from tui.widgets.engine_panel import EnginePanel
from tui.widgets.gather_sparkline import GatherSparkline
from tui.widgets.history_panel import HistoryPanel
from tui.widgets.latency_panel import LatencyPanel
from tui.widgets.model_status import ModelStatus

__all__ = [
    "AgentList",
    "BlockMap",
    "BlockMapPanel",
    "ChatInput",
    "ChatMessage",
    "ChatPane",
    "EnginePanel",
    "GatherSparkline",
    "HistoryPanel",
    "LatencyPanel",
    "ModelStatus",
]
