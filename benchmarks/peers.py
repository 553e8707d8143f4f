"""The peer libraries, called as their documentation shows, each on the same workload.

Every peer method is a :class:`Peer`: its library, its name, which of our methods it
computes (so it shares that method's floor), and a factory that prepares it on a workload
and returns the call to time. Peers that leave
hooks on a model or swap its modules work on a private copy of it (same weights), so that
they cannot slow down or change what the others run. Only the libraries that are installed
take part.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .ours import FLOORS
from .workload import Workload

Call = Callable[[], object]

CAPTUM, PGC, TORCHCAM = "captum", "pytorch-grad-cam", "torch-cam"
_MODULES = {CAPTUM: "captum", PGC: "pytorch_grad_cam", TORCHCAM: "torchcam"}
#: the copy shared by the peers whose hooks live only during one call
SHARED = "peers"


@dataclass(frozen=True)
class Peer:
    """``method`` of ``library``, which computes our ``same_as``; ``make(work)`` returns
    the call to time."""

    library: str
    method: str
    same_as: str
    make: Callable[[Workload], Call]
    #: another method of the library that runs exactly the same passes (only the few
    #: arithmetic operations on the layer's gradient differ): skipped where time is short
    same_passes_as: str | None = None

    @property
    def label(self) -> str:
        return f"{self.library} {self.method}"

    @property
    def floor(self) -> str:
        return FLOORS[self.same_as]


def installed(library: str) -> bool:
    return importlib.util.find_spec(_MODULES[library]) is not None


def _captum(name: str, layer: bool = False, **options: Any) -> Callable[[Workload], Call]:
    def make(work: Workload) -> Call:
        from captum import attr

        cls = getattr(attr, name)
        method = cls(work.model, work.module(work.layer)) if layer else cls(work.model)
        targets = list(work.targets)
        return lambda: method.attribute(work.inputs, target=targets, **options)
    return make


def _pgc_cam(name: str) -> Callable[[Workload], Call]:
    def make(work: Workload) -> Call:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = getattr(pytorch_grad_cam, name)
        model = work.private_copy(SHARED)
        layer = work.module(work.layer, model)
        targets = [ClassifierOutputTarget(t) for t in work.targets]

        def call() -> object:
            with cls(model=model, target_layers=[layer]) as cam:
                return cam(input_tensor=work.inputs, targets=targets)
        return call
    return make


def _pgc_guided(work: Workload) -> Call:
    from pytorch_grad_cam import GuidedBackpropReLUModel

    # it swaps the ReLU modules and puts back new, not in-place ones: a copy of its own;
    # it sets requires_grad on the tensor it is given and accumulates .grad: a new alias
    guided = GuidedBackpropReLUModel(work.private_copy(PGC + " guided"), device=None)
    return lambda: guided(work.inputs.detach(), target_category=work.targets[0])


def _torchcam(name: str, gradient: bool = True) -> Callable[[Workload], Call]:
    def make(work: Workload) -> Call:
        from torchcam import methods

        cls = getattr(methods, name)
        model = work.private_copy(SHARED)
        targets = list(work.targets)
        options = {"fc_layer": _last_linear(model)} if name == "CAM" else {}

        def call() -> object:
            with cls(model, target_layer=work.layer, **options) as extractor, \
                    torch.set_grad_enabled(gradient):
                scores = model(work.inputs)
                return extractor(class_idx=targets, scores=scores)
        return call
    return make


def _last_linear(model: nn.Module) -> str:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def torchcam_switch(work: Workload) -> tuple[Call, Callable[[], None]]:
    """torch-cam's class switch: one forward with hooks, then ``retain_graph=True`` backward
    passes for new classes. Returns the call to time and the clean-up."""
    from torchcam.methods import GradCAM

    model = work.private_copy(TORCHCAM + " switch")
    extractor = GradCAM(model, target_layer=work.layer)
    scores = model(work.inputs)

    def call() -> object:
        return extractor(class_idx=list(work.fresh_targets()), scores=scores,
                         retain_graph=True)
    return call, extractor.remove_hooks


PEERS: tuple[Peer, ...] = (
    Peer(CAPTUM, "LayerGradCam", "grad_cam", _captum("LayerGradCam", layer=True)),
    Peer(CAPTUM, "Saliency", "saliency", _captum("Saliency", abs=False)),
    Peer(CAPTUM, "InputXGradient", "input_x_gradient", _captum("InputXGradient")),
    Peer(CAPTUM, "GuidedBackprop", "guided_backprop", _captum("GuidedBackprop")),
    Peer(CAPTUM, "Deconvolution", "deconvnet", _captum("Deconvolution")),
    Peer(CAPTUM, "GuidedGradCam", "guided_grad_cam", _captum("GuidedGradCam", layer=True)),
    Peer(PGC, "GradCAM", "grad_cam", _pgc_cam("GradCAM")),
    Peer(PGC, "GradCAMPlusPlus", "grad_cam_pp", _pgc_cam("GradCAMPlusPlus"), "GradCAM"),
    Peer(PGC, "LayerCAM", "layer_cam", _pgc_cam("LayerCAM"), "GradCAM"),
    Peer(PGC, "GuidedBackpropReLUModel", "guided_backprop", _pgc_guided),
    Peer(TORCHCAM, "GradCAM", "grad_cam", _torchcam("GradCAM")),
    Peer(TORCHCAM, "GradCAMpp", "grad_cam_pp", _torchcam("GradCAMpp"), "GradCAM"),
    Peer(TORCHCAM, "LayerCAM", "layer_cam", _torchcam("LayerCAM"), "GradCAM"),
    Peer(TORCHCAM, "CAM", "cam", _torchcam("CAM", gradient=False)),
)


def available(same_as: str | None = None) -> list[Peer]:
    """The peer methods whose library is installed (that compute ``same_as``, if given)."""
    return [peer for peer in PEERS if installed(peer.library)
            and same_as in (None, peer.same_as)]
