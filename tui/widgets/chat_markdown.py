"""Markdown for chat replies: a newline is a line break, and a streamed paragraph lays out
the screen only when it gains a line.

Chat apps render a newline as a line break (a poem keeps its lines); Markdown makes it a
space. ``chat_markdown`` turns soft breaks into hard ones; code blocks, lists and tables
render as usual. While a reply streams, its last paragraph is updated on every append;
Textual lays out the whole screen on each update, which is what delays keys while several
agents stream, so ``ChatParagraph`` asks for a layout only when its height changes.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from textual.content import Content
from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownParagraph  # not re-exported by textual.widgets.markdown


def chat_markdown() -> MarkdownIt:
    """A GFM-like parser whose soft line breaks are hard ones."""
    parser = MarkdownIt("gfm-like")
    parser.core.ruler.after("inline", "soft_to_hard_breaks", _soft_to_hard_breaks)
    return parser


def _soft_to_hard_breaks(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


class ChatParagraph(MarkdownParagraph):
    """A paragraph that skips the screen layout when new text fits in its lines."""

    def set_content(self, content: Content) -> None:
        width = self.content_size.width
        old = getattr(self, "_content", None)
        same_height = width > 0 and old is not None and len(content.wrap(width)) == len(old.wrap(width))
        self._content = content
        self.update(content, layout=not same_height)


class ChatMarkdown(Markdown):
    """``Markdown`` with ``chat_markdown`` line breaks and ``ChatParagraph`` paragraphs."""

    BLOCKS = {**Markdown.BLOCKS, "paragraph_open": ChatParagraph}

    def __init__(self, markdown: str = "", *, classes: str | None = None) -> None:
        super().__init__(markdown, classes=classes, parser_factory=chat_markdown)
