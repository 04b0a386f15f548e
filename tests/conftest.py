"""Suite-wide: tests marked ``gpu`` need a CUDA device; without one they are skipped with the reason.

bench/gpu_check.sh selects them with ``pytest -m gpu`` on a machine that has one.
"""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Skip the ``gpu``-marked tests where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (bench/gpu_check.sh runs these)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
