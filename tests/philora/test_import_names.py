"""The packages import whatever the working directory holds (a user's data/ folder, data.py, training/)."""

import subprocess
import sys

import pytest

PROGRAM = """
import lora_core as lora
import phi_models
import philora.data, philora.training.run, philora.deploy
from philora.data import IGNORE_INDEX
from philora.training.run import main
assert lora.Linear and phi_models.from_pretrained and callable(main) and IGNORE_INDEX == -100
import data, training
print(data.WHOSE, training.WHOSE)
"""


@pytest.mark.parametrize("layout", ["folders", "modules"])
def test_packages_import_beside_a_users_data_and_training(tmp_path, layout):
    # The commonest ML project layout: data/ and training/ of the user's own next to their script.
    # Before the philora namespace this failed with "cannot import name 'IGNORE_INDEX' from 'data'".
    for name in ("data", "training"):
        if layout == "folders":
            (tmp_path / name).mkdir()
            (tmp_path / name / "__init__.py").write_text("WHOSE = 'user'\n")
        else:
            (tmp_path / f"{name}.py").write_text("WHOSE = 'user'\n")
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["user", "user"]  # the user's own modules keep their names


def test_packages_import_beside_namespace_folders(tmp_path):
    # data/ without __init__.py (a folder of files) is a namespace portion: it used to win over ours.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    program = "import philora.training.run, philora.data as d; print(d.IGNORE_INDEX)"
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "-100"
