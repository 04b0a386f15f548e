"""Evaluation after (or without) training: ``philora eval``, its report files, and the lm-evaluation-harness model."""
