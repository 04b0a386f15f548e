"""The ``philora`` command: one CLI with subcommands over lora_core, phi_models, data and training.

philora train --model phi-2 --data roleplay      # same as python train.py ...
philora SUB --help                               # every option with its default
"""
