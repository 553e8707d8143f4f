"""Helpers the tests import by name (``from support import ...``; pytest puts tests/ on the path).

Kept out of conftest.py on purpose: several folders have a conftest.py, and ``from conftest
import`` would pick whichever of them pytest happened to load last.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
KERNEL_CARDS = ROOT / "kernels"
ARTIFACTS = ROOT / "test-artifacts"


def load_by_path(name: str, path: Path) -> ModuleType:
    """Import the Python file at ``path`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


#: kernels/reference_nets.py (TinyNet in torch, and its NumPy reference), loaded by path
reference_nets = load_by_path("reference_nets", KERNEL_CARDS / "reference_nets.py")


def load_reference(method: str) -> dict[str, np.ndarray]:
    """The arrays of ``kernels/<method>/reference.npz``."""
    return reference_nets.load(KERNEL_CARDS / method / "reference.npz")


def wait_until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def random_photos(folder: Path, names: Iterable[str], shape: tuple[int, int] = (16, 16),
                  high: int = 255, broken: bytes = b"this is not a JPEG") -> Path:
    """``folder`` made, with a random PNG ``<name>.png`` of ``shape`` (H, W) per name (seed 0,
    values below ``high``) and an unreadable ``broken.jpg``."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, high, (*shape, 3), dtype=np.uint8)).save(
            folder / f"{name}.png")
    (folder / "broken.jpg").write_bytes(broken)
    return folder
