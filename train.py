"""philora's training CLI: ``python train.py --model phi-2 --data roleplay`` (no arguments: the offline demo).

Every option, its default and its help live in :class:`training.config.TrainConfig`;
``python train.py --help`` lists them.
"""

import os
import signal
import sys


def _terminated_while_starting(signum, frame):
    # Importing torch and the packages takes seconds; SIGTERM then would otherwise kill silently.
    # Exit at once rather than raise: an exception raised inside a library's import can be swallowed
    # there (the run then went on training) or leave it half imported. Nothing is written before main().
    os.write(2, b"terminated by SIGTERM while starting; nothing to save\n")
    os._exit(143)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminated_while_starting)
    from philora.training.run import main

    code = main()
    # Exiting already: a late SIGTERM (torchrun stopping the other ranks) must not raise in atexit callbacks.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)
