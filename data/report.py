"""The dataset report printed before training."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100), at least 1
    return sorted_values[int(rank) - 1]


@dataclass
class DatasetReport:
    """Counts and lengths of a prepared dataset; ``str(report)`` is a small table."""

    source: str = ""
    template: str = ""
    template_origin: str = ""  # where the template comes from (data.templates.describe_template)
    shape: str = ""  # the detected (or --shape) data shape, e.g. "alpaca"
    dropped_by_template: Counter = field(default_factory=Counter)  # role -> messages the template left out
    max_seq_len: int = 0
    records: int = 0  # conversations read from the source (both splits)
    filtered: int = 0  # dropped on purpose by a source filter (e.g. language)
    kept_train: int = 0
    kept_val: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    truncated: int = 0
    tokens: int = 0  # input tokens of the kept examples
    target_tokens: int = 0  # positions that carry a loss
    lengths: list[int] = field(default_factory=list, repr=False)

    @property
    def kept(self) -> int:
        """Examples kept in both splits."""
        return self.kept_train + self.kept_val

    @property
    def num_skipped(self) -> int:
        """Examples skipped for any reason."""
        return sum(self.skipped.values())

    def length_percentiles(self) -> dict[str, int]:
        """p50/p90/p99/max of the kept examples' lengths in tokens."""
        values = sorted(self.lengths)
        return {
            "p50": percentile(values, 50),
            "p90": percentile(values, 90),
            "p99": percentile(values, 99),
            "max": values[-1] if values else 0,
        }

    def __str__(self) -> str:
        share = self.target_tokens / self.tokens if self.tokens else 0.0
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        pct = self.length_percentiles()
        origin = f" ({self.template_origin})" if self.template_origin else ""
        rows = [
            ("source", f"{self.source}" + (f" (shape {self.shape})" if self.shape else "")),
            ("template", f"{self.template}{origin}, max_seq_len {self.max_seq_len}"),
            ("examples", f"{self.records} read, {self.filtered} filtered"),
            ("kept", f"{self.kept} ({self.kept_train} train, {self.kept_val} val)"),
            ("skipped", f"{self.num_skipped} ({skipped})"),
            ("truncated", f"{self.truncated}"),
            ("tokens", f"{self.tokens} ({self.target_tokens} target, {share:.1%})"),
            ("length", "  ".join(f"{k} {v}" for k, v in pct.items())),
        ]
        if self.dropped_by_template:
            lost = ", ".join(f"{n} {role}" for role, n in sorted(self.dropped_by_template.items()))
            rows.append(
                (
                    "dropped",
                    f"{lost} message(s): the model's template does not render them "
                    f"(they are not trained on or seen; pass --template to use another)",
                )
            )
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
