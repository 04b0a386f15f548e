"""What generate, chat and serve share: loading RUN_OR_MODEL for inference and the reply's stops.

Loading goes through ``philora.runs.load_for_inference`` (the run directory's owner); the template is
``--template`` if given, else the run's, else the model's own chat format, else data's base default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from philora.commands.common import CommandError
from philora.data.errors import DataError
from philora.prompting import check_template, default_template, stop_strings_for

InferenceError = CommandError  # bad input to generate/chat/serve: one line, exit 2


@dataclass
class InferenceModel:
    """A model ready to answer: weights, tokenizer, prompt template, and what ends a reply."""

    model: Any
    tokenizer: Any
    template: str
    stop_ids: list[int]
    stop_strings: tuple[str, ...]
    name: str
    run: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        """Most tokens (prompt + reply) the model takes."""
        return int(self.model.config.max_position_embeddings)


def load_inference_model(
    target: str,
    *,
    adapter: str | None = None,
    quantize: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    template: str | None = None,
) -> InferenceModel:
    """Load ``target`` (a run directory, preset, hub id, local model or merged export) for inference."""
    from philora.runs import load_for_inference

    loaded = load_for_inference(target, adapter=adapter, quantize=quantize, dtype=dtype, device=device)
    tokenizer = loaded.tokenizer
    chosen = template or loaded.template or default_template(tokenizer)
    try:
        check_template(chosen)
    except DataError as err:
        raise InferenceError(f"--template: {err}") from None
    stop_ids = list(tokenizer.stop_token_ids)
    run = loaded.run
    if run is not None:
        stop_ids += [int(t) for t in getattr(run, "stop_token_ids", []) if int(t) not in stop_ids]
    return InferenceModel(
        model=loaded.model.eval(),
        tokenizer=tokenizer,
        template=chosen,
        stop_ids=stop_ids,
        stop_strings=stop_strings_for(chosen),
        name=str(target),
        run=run,
    )
