"""Precision modes: compute dtype, base dtype for --dtype (names parsed by phi_models.parse_dtype), CPU refusals."""

import pytest
import torch

from philora.training.errors import TrainingError
from philora.training.precision import Precision, base_dtype, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32), ("fp16", torch.float16)])
def test_compute_and_base_dtype(name, dtype):
    precision = Precision(name, CPU)
    assert precision.compute_dtype == dtype
    assert base_dtype("auto", precision) == dtype  # auto: the frozen base in the compute dtype
    assert base_dtype("fp32", precision) == torch.float32 and base_dtype("bf16", precision) == torch.bfloat16


def test_fp16_on_cpu_is_refused():
    with pytest.raises(TrainingError, match="--dtype fp16 is only supported on CUDA"):
        base_dtype("fp16", Precision("bf16", CPU))
    with pytest.raises(TrainingError, match="--precision fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    assert Precision("fp32", CPU).make_scaler() is None and Precision("bf16", CPU).make_scaler() is None
