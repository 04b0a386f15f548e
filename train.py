"""philora's training CLI: ``python train.py --model phi-2 --data roleplay`` (no arguments: the offline demo).

Every option, its default and its help live in :class:`training.config.TrainConfig`;
``python train.py --help`` lists them.
"""

import sys

from training.run import main

if __name__ == "__main__":
    sys.exit(main())
