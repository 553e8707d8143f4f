"""Global-average-pooling heads, recognised from the values of one forward pass.

Many classifiers end in ``logits = W · mean_hw(φ(A)) + b`` with ``A`` a spatial layer and
``φ`` the identity (ResNet, EfficientNet, MobileNetV2) or a ReLU (DenseNet applies
``F.relu`` after ``features``), or in ``logits = mean_hw(M)`` with one map per class
(SqueezeNet). On such a head the class activation map (Zhou et al. 2016) is defined, and the
gradient of a logit at ``A`` is known in closed form, ``W[c, k] · φ'(A) / (h·w)``, so the
whole Grad-CAM family at that layer needs no backward pass at all (DESIGN rule 3).

The head is recognised by checking the recorded values (the last ``nn.Linear``'s input equals
the spatial mean of the layer, its output is the logits), never by module names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Head:
    """``logits = weight · mean_hw(φ(A)) (+ bias)`` at ``layer``, ``φ = relu if rectified``.

    ``weight`` is ``(classes, K)``; ``None`` means a class-map head (``K = classes``,
    ``weight = identity``).
    """

    layer: str
    weight: torch.Tensor | None
    rectified: bool

    def class_activation_map(self, activation: torch.Tensor,
                             targets: torch.Tensor) -> torch.Tensor:
        """``(N, K, h, w)`` activations -> ``(N, h, w)`` map ``Σ_k W[c, k] φ(A_k)``."""
        features = activation.relu() if self.rectified else activation
        if self.weight is None:
            return features[torch.arange(len(targets)), targets]
        return torch.einsum("nk,nkhw->nhw", self.weight[targets].to(features.dtype), features)

    def gradient(self, activation: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``∂ logit_c / ∂A`` in closed form, ``(N, K, h, w)``."""
        n, k, h, w = activation.shape
        if self.weight is None:
            rows = torch.zeros(n, k, dtype=activation.dtype, device=activation.device)
            rows[torch.arange(n), targets] = 1.0
        else:
            rows = self.weight[targets].to(activation.dtype)
        grad = (rows / (h * w))[:, :, None, None].expand(n, k, h, w)
        return grad * (activation > 0) if self.rectified else grad.contiguous()


def find_head(logits: torch.Tensor, activations: Mapping[str, torch.Tensor],
              last_linear: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
              ) -> Head | None:
    """Recognise a GAP head from recorded values.

    ``activations``: candidate layers in forward order; ``last_linear``: the input ``(N, K)``,
    output and weight of the last ``nn.Linear`` call, if any.
    """
    with torch.no_grad():
        if last_linear is not None:
            features, output, weight = last_linear
            if output is logits or (output.shape == logits.shape and _close(output, logits)):
                head = _match(features, activations, weight)
                if head is not None:
                    return head
        return _match(logits, activations, None)


def _match(pooled: torch.Tensor, activations: Mapping[str, torch.Tensor],
           weight: torch.Tensor | None) -> Head | None:
    for name, activation in reversed(list(activations.items())):
        if pooled.ndim != 2 or activation.shape[:2] != pooled.shape:
            continue
        for rectified in (False, True):
            features = activation.relu() if rectified else activation
            if _close(features.mean(dim=(2, 3)), pooled):
                return Head(name, None if weight is None else weight.detach(), rectified)
    return None


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5 * max(scale, 1.0)))
