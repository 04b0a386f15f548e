"""Dataset sources: each parses its files into :class:`data.conversation.Conversation` lists."""

from .base import SourceData
from .registry import load_source, NAMED_SOURCES

__all__ = ["SourceData", "load_source", "NAMED_SOURCES"]
