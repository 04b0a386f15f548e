"""Datasets for Phi fine-tuning: sources, prompt formats, loss-masked tokenization, batching.

prepared = data.prepare("samples/roleplay", tokenizer, max_seq_len=512)
print(prepared.report)
batches = data.make_batches(prepared.train, batch_size=4, max_seq_len=512, pad_id=tokenizer.pad_token_id)
"""

from philora.data.batching import EpochBatches, collate, make_batches, pack_rows
from philora.data.conversation import Conversation, Message
from philora.data.errors import DataError
from philora.data.prepare import PreparedData, prepare
from philora.data.report import DatasetReport
from philora.data.sources import NAMED_SOURCES, SourceData, load_source
from philora.data.templates import TEMPLATES, render_prompt
from philora.data.tokenize import IGNORE_INDEX, Example, tokenize_many, tokenize_segments

__all__ = [
    "prepare",
    "PreparedData",
    "make_batches",
    "EpochBatches",
    "collate",
    "pack_rows",
    "Example",
    "IGNORE_INDEX",
    "tokenize_segments",
    "tokenize_many",
    "DatasetReport",
    "DataError",
    "Conversation",
    "Message",
    "load_source",
    "SourceData",
    "NAMED_SOURCES",
    "TEMPLATES",
    "render_prompt",
]
