"""Dataset sources: each parses its files into :class:`data.conversation.Conversation` lists."""

from philora.data.sources.base import SourceData
from philora.data.sources.registry import NAMED_SOURCES, load_source

__all__ = ["SourceData", "load_source", "NAMED_SOURCES"]
