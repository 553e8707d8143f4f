"""binder/ as repo2docker builds it: a fresh environment from the binder files alone.

The fast tests check that ``binder/requirements.txt`` pins the torch and torchvision release of
``constraints.txt`` (the one ``make`` and CI test) from the CPU index, and that ``start`` caps
the threads. The slow test simulates the build: a fresh virtual environment (no system site
packages), ``pip install -r binder/requirements.txt`` from a copy of the repository with the
CPU-only builds replaced by the pinned releases of ``constraints.txt`` (the test machines
cannot reach download.pytorch.org). Those releases are the CUDA builds that the test's own
environment already holds (5 GB): they are linked into the new environment instead of being
installed a second time, and pip finds them satisfied; everything else the requirements name
is installed by pip. Then ``postBuild``, then
the course index and the quickstart executed through ``start`` in that environment (the other
notebooks run in tests/test_notebooks.py, to keep CI under its time budget).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: what repo2docker needs of the repository: the package, its metadata, the course
COPIED = ("pyproject.toml", "README.md", "constraints.txt", "xai_widgets", "binder",
          "notebooks")
EXECUTED = ("index.ipynb", "01_quickstart.ipynb")


def pins(path: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line (a local ``+cpu`` tag dropped)."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)==([^\s#+]+)(\+\w+)?", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_requirements_pin_the_tested_torch_from_the_cpu_index() -> None:
    requirements = (BINDER / "requirements.txt").read_text()
    binder, tested = pins(BINDER / "requirements.txt"), pins(ROOT / "constraints.txt")
    for name in ("torch", "torchvision"):
        assert binder.get(name) == tested[name], f"{name}: binder {binder.get(name)} vs " \
                                                 f"constraints.txt {tested[name]}"
        assert re.search(rf"^{name}==[^\s]+\+cpu$", requirements, re.MULTILINE), \
            f"{name} must be the CPU-only build"
    assert f"--extra-index-url {CPU_INDEX}" in requirements
    assert re.search(r"^\.\s*$", requirements, re.MULTILINE), "the package from the repository"


def test_start_caps_threads_and_runs_the_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                              "MKL_NUM_THREADS")}
    out = subprocess.run([str(BINDER / "start"), "sh", "-c",
                          "echo $OMP_NUM_THREADS $MKL_NUM_THREADS"], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out[0] == out[1]
    assert 1 <= int(out[0]) <= (os.cpu_count() or 1)
    env["OMP_NUM_THREADS"] = "3"  # a value set by the user wins
    out = subprocess.run([str(BINDER / "start"), "sh", "-c", "echo $OMP_NUM_THREADS"],
                         env=env, check=True, capture_output=True, text=True).stdout.split()
    assert out == ["3"]


def local_requirements(source: Path, target: Path) -> None:
    """binder/requirements.txt with the CPU index and the ``+cpu`` tags removed."""
    lines = []
    for line in source.read_text().splitlines():
        if line.strip().startswith("--extra-index-url") and CPU_INDEX in line:
            continue
        lines.append(re.sub(r"^(torch|torchvision)==([^\s+]+)\+cpu", r"\1==\2", line))
    target.write_text("\n".join(lines) + "\n")


#: the pinned torch release and what it brings (CUDA libraries): linked, not reinstalled
LINKED = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$", re.IGNORECASE)


def link_torch(site: Path) -> None:
    """Link the test environment's torch, torchvision and their CUDA libraries (package
    folders and ``.dist-info``) into ``site``, the new environment's site-packages."""
    for dist in importlib.metadata.distributions():
        if not LINKED.match(dist.metadata["Name"] or "") or dist.files is None:
            continue
        root = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            if not (site / top).exists() and (root / top).exists():
                (site / top).symlink_to(root / top)


@pytest.mark.slow
def test_binder_builds_and_runs_the_course(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc",
                                                          ".ipynb_checkpoints"))
        else:
            shutil.copy2(source, repo / name)
    local_requirements(BINDER / "requirements.txt", repo / "binder" / "requirements.txt")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_ = venv / "bin"
    (site,) = (venv / "lib").glob("python3*/site-packages")
    link_torch(site)
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    log = tmp_path / "build.log"
    with log.open("w") as out:
        steps = [
            [str(bin_ / "python"), "-m", "pip", "install", "-q", "--no-compile", "-c",
             "constraints.txt",
             "-r", "binder/requirements.txt"],
            ["bash", "binder/postBuild"],
        ]
        for step in steps:
            done = subprocess.run(step, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
            assert done.returncode == 0, f"{step} failed:\n{log.read_text()[-4000:]}"
    probe = subprocess.run([str(bin_ / "python"), "-c",
                            "import torch, xai_widgets; print(torch.__version__, "
                            "xai_widgets.__file__)"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    assert str(venv) in probe.stdout, "the package is installed in the environment itself"
    for name in EXECUTED:
        done = subprocess.run(
            ["binder/start", str(bin_ / "jupyter"), "nbconvert", "--to", "notebook",
             "--execute", "--ExecutePreprocessor.timeout=600", "--output-dir", str(tmp_path),
             f"notebooks/{name}"], cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-4000:]
        executed = (tmp_path / name).read_text()
        assert '"output_type": "error"' not in executed
