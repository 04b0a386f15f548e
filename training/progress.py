"""What a run shows and records: a progress line, JSON-lines metrics, TensorBoard, peak memory."""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import torch

METRICS_FILE = "metrics.jsonl"


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far in MiB: CUDA max allocated, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def format_duration(seconds: float) -> str:
    """``3725`` -> ``1:02:05``; ``65`` -> ``1:05``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class MetricsLog:
    """Appends one JSON object per line to ``<output_dir>/metrics.jsonl`` (and to TensorBoard if installed)."""

    def __init__(self, output_dir: str | os.PathLike, *, resume_step: int | None = None, tensorboard: bool = True):
        self.path = Path(output_dir) / METRICS_FILE
        if resume_step is not None and self.path.is_file():
            self._truncate_after(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))
            except Exception:  # tensorboard not installed: JSON lines only
                self._tb = None

    def _truncate_after(self, step: int) -> None:
        """A resumed run re-does the steps after its checkpoint: drop their old records."""
        from lora_core import atomic_write

        kept = []
        # Lines that are not our records (cut short by a kill, damaged, not UTF-8) are dropped.
        for line in self.path.read_bytes().decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            at = record.get("step") if isinstance(record, dict) else None
            if isinstance(at, int) and not isinstance(at, bool) and at <= step:
                kept.append(line)
        text = "".join(line + "\n" for line in kept)
        atomic_write(self.path, lambda p: Path(p).write_text(text, encoding="utf-8"))

    def write(self, record: dict) -> None:
        """Record ``record`` (must hold ``step`` and ``kind``) and flush it to disk."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, record["step"])

    def close(self) -> None:
        """Flush and close the sinks."""
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class ProgressBar:
    """One self-updating line on a terminal (a plain line per log step otherwise) with loss, lr, tok/s, ETA."""

    def __init__(self, total_steps: int, *, start_step: int = 0, stream=None, width: int = 24):
        self.total = max(1, total_steps)
        self.start_step = start_step
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.perf_counter()
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, step: int, *, loss: float, lr: float, tokens_per_s: float, force_line: bool = False) -> None:
        """Redraw the bar at optimizer step ``step``."""
        done = step - self.start_step
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total - step) if done > 0 else float("nan")
        filled = int(self.width * step / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        line = (
            f"step {step}/{self.total} [{bar}] loss {loss:.4f} lr {lr:.2e} "
            f"{tokens_per_s:,.0f} tok/s ETA {format_duration(eta)}"
        )
        if self.interactive:
            self.stream.write("\r" + line)
            self.stream.flush()
        elif force_line:
            self.stream.write(line + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line without garbling the bar."""
        if self.interactive:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
