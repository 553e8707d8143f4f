"""Reference CAM maps of TinyNet, computed by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/cam/make_reference.py`` rewrites reference.npz next to
this file. It holds TinyNet's weights, its input batch and targets (see
``kernels/reference_nets.py``) and

* ``map``: the class activation map ``Σ_k W[c, k] · relu(z2)_k``, ``(2, 4, 4)``, where
  ``relu(z2)`` (``features.3``) is what the global average pooling reads;
* ``map_unrectified``: ``Σ_k W[c, k] · z2_k``, the same weights on the pre-ReLU tensor
  (``features.2``), which is *not* CAM: a kernel that forgets the ReLU of a functional head
  returns this instead.

Checks before writing: the mean of ``map`` over the cells plus the bias is the target logit
(the identity that makes CAM a decomposition of the logit).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    f = rn.np_forward(arrays, x)
    class_weights = arrays["classifier.weight"][targets]  # (N, K)
    cam = np.einsum("nk,nkhw->nhw", class_weights, f["features.3"])
    logits = f["logits"][np.arange(len(targets)), targets]
    assert np.allclose(cam.mean(axis=(1, 2)) + arrays["classifier.bias"][targets], logits,
                       rtol=1e-12, atol=1e-12)
    arrays["map"] = cam
    arrays["map_unrectified"] = np.einsum("nk,nkhw->nhw", class_weights, f["features.2"])
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
