"""Peak memory of one Grad-CAM call above the loaded model (issue 6), ours and the peers'.

Each library is measured in a fresh process (``python -m benchmarks.memory LIBRARY MODEL
BATCH``): load the model, make the input, call once to warm up, then the rise of the
resident set at its peak during a second call (:func:`.harness.peak_memory`). glibc's large
allocations are forced to ``mmap`` so that freed memory leaves the resident set at once and
one call cannot hide in the memory an earlier one freed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

import torch

from . import floors, harness, ours
from .peers import available
from .workload import load

#: allocations above 128 KiB are mmap-ed and given back when freed (no dynamic threshold)
_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


#: the floor's passes (``f_grad``), measured like a library
FLOOR = "floor (f_grad)"


def libraries(with_peers: bool = True) -> list[str]:
    """The floor, ours, then every installed peer library that has a Grad-CAM."""
    peers = [peer.library for peer in available("grad_cam")]
    return [FLOOR, ours.OURS, *(peers if with_peers else [])]


def grad_cam_call(library: str, model: str, batch: int) -> Callable[[], object]:
    """The Grad-CAM of ``library`` at the default layer, ready to call."""
    work = load(model, batch)
    if library == FLOOR:
        return floors.forward_to_layer(work)
    if library == ours.OURS:
        return ours.one_shot(work, "grad_cam")
    peer = next(p for p in available("grad_cam") if p.library == library)
    return peer.make(work)


def measure(library: str, model: str, batch: int, threads: int) -> int:
    """Peak bytes above the model of one call of ``library``'s Grad-CAM (fresh process)."""
    command = [sys.executable, "-m", "benchmarks.memory", library, model, str(batch),
               str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, **_ENV})
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"])


def run(model: str, batch: int, threads: int, with_peers: bool = True) -> dict[str, int]:
    """Peak bytes per library."""
    return {library: measure(library, model, batch, threads)
            for library in libraries(with_peers)}


def main(argv: Sequence[str]) -> None:
    library, model, batch, threads = argv
    torch.set_num_threads(int(threads))
    call = grad_cam_call(library, model, int(batch))
    call()
    print(json.dumps({"peak_bytes": harness.peak_memory(call)}))


if __name__ == "__main__":
    main(sys.argv[1:])
