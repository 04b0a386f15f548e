"""``philora lm-eval ARGS``: lm-evaluation-harness's own command line with the ``philora`` model registered.

    philora lm-eval --model philora --model_args pretrained=runs/demo --tasks hellaswag
    philora lm-eval --model philora --model_args pretrained=phi-2,adapter=my.safetensors --tasks T --include_path DIR

Every argument goes to lm_eval unchanged (``philora lm-eval --help`` shows lm_eval's help).
"""

from __future__ import annotations

import sys

HINT = "pip install 'philora[lm-eval]'"


def main(argv: list[str]) -> int:
    """Register the philora model, then run lm_eval's CLI on ``argv``; exit 2 with one line on bad input."""
    from philora.commands.common import fail
    from philora.evaluation.errors import USER_ERRORS

    try:
        import lm_eval.__main__ as harness
    except ImportError:
        return fail(f"lm-evaluation-harness is not installed; {HINT}")
    import philora.evaluation.lm_eval_model  # noqa: F401  (registers --model philora)

    saved = sys.argv
    sys.argv = ["lm_eval", *argv]
    try:
        harness.cli_evaluate()
    except USER_ERRORS as err:
        return fail(str(err))
    except SystemExit as stop:  # argparse and lm_eval end with SystemExit
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    finally:
        sys.argv = saved
    return 0
