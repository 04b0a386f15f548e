"""A device argument checked up front: a name torch does not know, or CUDA where there is none, is a
PhiModelError saying what to pass instead of torch's RuntimeError/AssertionError from deep inside."""

from __future__ import annotations

import torch

from phi_models.errors import PhiModelError


def check_device(device) -> torch.device:
    """``device`` (a torch.device or a name like 'cpu', 'cuda', 'cuda:1') as a usable torch.device."""
    if not isinstance(device, (str, torch.device)):
        raise PhiModelError(
            f"device must be a name like 'cpu' or 'cuda' or a torch.device, got {type(device).__name__}"
        )
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise PhiModelError(f"device {device!r}: not a device name ({err}); use 'cpu' or 'cuda'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PhiModelError(f"device {str(device)!r}: no CUDA device is available to torch; use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PhiModelError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise PhiModelError(f"device {str(device)!r}: MPS is not available here; use device='cpu'")
    elif device.type not in ("cpu", "meta"):
        raise PhiModelError(f"device {str(device)!r}: phi_models runs on 'cpu' or 'cuda'")
    return device
