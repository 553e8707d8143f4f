"""``make lab`` opens JupyterLab for root (every container) and for a normal user alike."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from support import ROOT


def lab_command(*prefix: str) -> str:
    """The line ``make -n lab`` would run to start JupyterLab."""
    listing = subprocess.run([*prefix, "make", "-n", "-s", "lab"], cwd=ROOT, check=True,
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
