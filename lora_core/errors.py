"""Exceptions raised by lora_core."""


class LoRAError(ValueError):
    """Bad input to a lora_core function: the message names the value and says what to do."""


class BiasModeError(LoRAError, NotImplementedError):
    """Unknown `bias` mode. Also a NotImplementedError, which is what loralib raised."""


BIAS_MODES = ("none", "all", "lora_only")


def check_bias_mode(bias: str) -> None:
    """Raise BiasModeError unless `bias` is one of loralib's three modes."""
    if bias not in BIAS_MODES:
        raise BiasModeError(f"bias={bias!r} is not a bias mode; use one of {', '.join(map(repr, BIAS_MODES))}")
