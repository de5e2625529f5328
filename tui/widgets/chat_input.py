"""The message input of a chat: an Input that lets "?" open help while it is empty."""

from __future__ import annotations

from textual.widgets import Input


class ChatInput(Input):
    """Types "?" like any character once there is text; while empty, "?" reaches the app's help key."""

    def check_consume_key(self, key: str, character: str | None) -> bool:
        if character == "?" and not self.value:
            return False
        return super().check_consume_key(key, character)
