"""Modal screens of blockpool-tui."""

from __future__ import annotations

from tui.screens.agent_settings import AgentSettingsResult, AgentSettingsScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen
from tui.screens.text_prompt import TextPromptScreen

__all__ = ["AgentSettingsResult", "AgentSettingsScreen", "ConfirmScreen", "HelpScreen", "TextPromptScreen"]
