"""philora's training CLI: ``python train.py --model phi-2 --data roleplay`` (no arguments: the offline demo).

Every option, its default and its help live in :class:`training.config.TrainConfig`;
``python train.py --help`` lists them.
"""

import sys

if __name__ == "__main__":
    from philora.training import signals  # standard library only: in place before torch takes seconds to import

    signals.exit_on_sigterm_while_starting()
    from philora.training.run import main

    code = main()
    signals.ignore_sigterm()
    sys.exit(code)
