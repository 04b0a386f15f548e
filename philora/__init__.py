"""The ``philora`` command: one CLI with subcommands over lora_core, phi_models, data and training.

    philora train --model phi-2 --data roleplay      # same as python train.py ...
    philora SUB --help                               # every option with its default

``data``, ``training`` and ``deploy`` are folders at the top of the source tree but import as
``philora.data``, ``philora.training`` and ``philora.deploy``: their own names are too common to
claim (a user's ``data/`` folder or ``data.py`` would shadow them). setup.cfg maps them for installs;
in a source checkout (a clone run as ``python train.py``, or a worktree on ``PYTHONPATH``) the
finder below maps them onto the folders beside this one, so the tree you run is the tree you edit.
"""

import importlib.util
import sys
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent
_FOLDERS = ("data", "training", "deploy")


class _SourceTreeFinder:
    """Finds ``philora.<folder>`` in the folder of that name beside ``philora/`` (source checkouts only)."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        prefix, _, folder = fullname.partition(".")
        if prefix != "philora" or folder not in _FOLDERS:
            return None
        init = _SOURCE_ROOT / folder / "__init__.py"
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


if (_SOURCE_ROOT / "setup.cfg").is_file() and all((_SOURCE_ROOT / f / "__init__.py").is_file() for f in _FOLDERS):
    sys.meta_path.insert(0, _SourceTreeFinder)
