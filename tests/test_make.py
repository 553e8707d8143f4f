"""``make lab`` opens JupyterLab for root (every container) and for a normal user alike."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from support import ROOT


def lab_command(*prefix: str) -> str:
    """The line ``make -n lab`` would run to start JupyterLab, in a world-readable copy of
    the Makefile and its inputs (a checkout may sit in a folder only its owner can enter)."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        folder.chmod(0o755)
        for name in ("Makefile", "pyproject.toml", "constraints.txt"):
            shutil.copy(ROOT / name, folder)
        listing = subprocess.run([*prefix, "make", "-n", "-s", "lab"], cwd=folder, check=True,
                                 capture_output=True, text=True).stdout
    return next(line for line in listing.splitlines() if "jupyter lab" in line)


def test_root_gets_allow_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("this machine does not run the tests as root")
    assert "--allow-root" in lab_command()


def test_a_normal_user_does_not() -> None:
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("no runuser to act as a normal user")
        command = lab_command(runuser, "-u", "nobody", "--")
    else:
        command = lab_command()
    assert "jupyter lab" in command and "--allow-root" not in command
