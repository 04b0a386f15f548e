"""``data.prepare``: a source and a tokenizer in, tokenized train/val examples and a report out."""

from __future__ import annotations

import random
from dataclasses import dataclass

from philora.data.arguments import require_fraction, require_int, require_tokenizer
from philora.data.conversation import Conversation
from philora.data.errors import DataError
from philora.data.report import DatasetReport
from philora.data.sources import load_source
from philora.data.templates import check_template, default_template, describe_template, render
from philora.data.tokenize import Example, tokenize_many


@dataclass
class PreparedData:
    """Tokenized examples ready for :func:`data.make_batches`, and the report on them."""

    train: list[Example]
    val: list[Example]
    report: DatasetReport
    template: str


def _split(conversations: list[Conversation], val_fraction: float, seed: int):
    # A seeded, order-independent hold-out; at least one validation example when asked for one.
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction} must be in [0, 1)")
    if val_fraction == 0.0 or len(conversations) < 2:
        return conversations, []
    count = max(1, round(len(conversations) * val_fraction))
    picked = set(random.Random(f"philora-split:{seed}").sample(range(len(conversations)), count))
    train = [c for i, c in enumerate(conversations) if i not in picked]
    val = [c for i, c in enumerate(conversations) if i in picked]
    return train, val


def _tokenize_all(conversations, tokenizer, template, max_seq_len, train_on_prompt, report) -> list[Example]:
    wanted = []
    for conversation in conversations:
        if conversation.has_target:
            wanted.append(conversation)
        else:
            report.skipped["no assistant turn"] += 1
    dropped: list[str] = []
    rendered = [render(c, template, tokenizer, dropped) for c in wanted]
    report.dropped_by_template.update(dropped)
    results = tokenize_many(rendered, tokenizer, max_seq_len=max_seq_len, train_on_prompt=train_on_prompt)
    examples = []
    for result in results:
        report.truncated += result.truncated
        if result.example is None:
            report.skipped["no target left after truncation"] += 1
            continue
        examples.append(result.example)
        report.tokens += len(result.example)
        report.target_tokens += result.example.num_targets
        report.lengths.append(len(result.example))
    return examples


def prepare(
    source,
    tokenizer,
    *,
    template: str | None = None,
    max_seq_len: int = 1024,
    train_on_prompt: bool = False,
    val_fraction: float = 0.05,
    seed: int = 0,
    limit: int | None = None,
    eval_data: str | None = None,
    **source_options,
) -> PreparedData:
    """Load ``source``, render it with ``template`` (default: the model's chat format, or
    the usual base-model format for that dataset), tokenize with loss masks, and split.

    ``source`` is ``roleplay``/``tweetsumm``/``oasst1``, ``samples/<name>`` or a local file;
    ``tokenizer`` a ``phi_models.PhiTokenizer`` (or a name for ``phi_models.load_tokenizer``).
    The source's own validation split is used when it has one, else ``val_fraction`` of
    train is held out (seeded). ``limit`` caps the number of conversations per split.
    ``eval_data`` is a separate source (same kinds, same ``shape``/``columns``) used as the validation
    split instead. ``source_options``: ``shape``, ``columns``, ``split``, ``subset``, ``revision``, ...
    """
    if isinstance(tokenizer, str):
        from phi_models import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    require_tokenizer(tokenizer)
    require_int("max_seq_len", max_seq_len, 2)
    require_fraction("val_fraction", val_fraction)
    if limit is not None:
        require_int("limit", limit, 1)
    if max_seq_len < 2:
        raise DataError(f"max_seq_len={max_seq_len} is too small; use at least 2")
    if limit is not None and limit < 1:
        raise DataError(f"limit={limit} must be a positive number of examples or None")
    data = load_source(source, **source_options)
    shipped = getattr(tokenizer, "chat_template", None)
    if template:
        template = check_template(template)
    else:
        template = default_template(data.kind, tokenizer.chat_format, shipped is not None)
    if eval_data is not None:
        shared = {k: v for k, v in source_options.items() if k in ("shape", "columns")}
        train_conv, val_conv = data.train, load_source(eval_data, **shared).train
    elif data.val is not None:
        train_conv, val_conv = data.train, data.val
    else:
        train_conv, val_conv = _split(data.train, val_fraction, seed)
    if limit is not None:
        train_conv, val_conv = train_conv[:limit], val_conv[:limit]
    report = DatasetReport(
        source=data.name,
        template=template,
        max_seq_len=max_seq_len,
        template_origin=describe_template(template, tokenizer),
        shape=data.kind,
        records=data.records,
        filtered=data.filtered,
    )
    train = _tokenize_all(train_conv, tokenizer, template, max_seq_len, train_on_prompt, report)
    val = _tokenize_all(val_conv, tokenizer, template, max_seq_len, train_on_prompt, report)
    report.kept_train, report.kept_val = len(train), len(val)
    if not train:
        raise DataError(
            f"{data.name}: no training examples left after filtering ({report.records} read, "
            f"{report.filtered} filtered, skipped: {dict(report.skipped) or 'none'}); "
            f"check the source, its filters (e.g. lang=) and max_seq_len"
        )
    return PreparedData(train=train, val=val, report=report, template=template)
