"""The code is formatted and linted with ruff (settings in pyproject.toml), as CI checks it.

To fix locally: ``ruff format . && ruff check --fix .``.
"""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _ruff():
    exe = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) or shutil.which(
        "ruff"
    )
    if exe is None:
        pytest.skip("ruff is not installed (it is in the test extra: pip install -e '.[test]')")
    return exe


@pytest.mark.parametrize(
    "command", [["format", "--check", "."], ["check", "."]], ids=["format", "lint"]
)
def test_ruff(command):
    proc = subprocess.run(
        [_ruff(), *command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"ruff {' '.join(command)}:\n{proc.stdout}\n{proc.stderr}"
