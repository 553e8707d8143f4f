"""The core benchmark (issue 2 "Speed", issue 6 memory).

For each model and batch size, two groups of cases are timed, each interleaved with its own
floors in the same process:

* **calls**: one call of each method from scratch, ours through ``explain`` and the peers'
  through their own API, as ratios to the floors ``fb``, ``f_grad``, ``f``;
* **switches**: on a warm trace (Grad-CAM at the default layer already computed), a new class,
  a new layer, another method of the Grad-CAM family, saliency after Grad-CAM, each as a ratio
  to the backward it cannot avoid on a graph built once (torch-cam's ``retain_graph`` switch
  beside ours; captum and pytorch-grad-cam rerun everything, so their switch costs a call).

Then peak memory of Grad-CAM (:mod:`.memory`) and the guided-backprop gaps (:mod:`.gap`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xai_widgets.trace import TraceSet

from . import floors, harness, ours
from .floors import F_GRAD, FB, F
from .peers import TORCHCAM, Call, Peer, installed, torchcam_switch
from .workload import Workload, load

FLOOR = "floor"
#: our targets: a call within 3 % of its floor, a switch within 10 % of the backward it needs
CALL_TARGET, SWITCH_TARGET = 1.03, 1.10
#: switch floors, on a graph built once (:class:`floors.BuiltGraph`)
NEW_CLASS_LAYER, NEW_CLASS_INPUT = "new class → layer", "new class → input"
LAYER_TO_PREVIOUS, LAYER_TO_INPUT = "layer → previous", "layer → input"
#: Grad-CAM at the previous stage after the default layer (the layers: ConfigResult)
LAYER_SWITCH = "Grad-CAM, layer switch"
#: a group's rounds after the first call of each case warm up again while they are cheap
WARM_AGAIN_S = 30.0


@dataclass(frozen=True)
class Case:
    """One timed call: ``floor`` names the floor(s) of its ratio (``a+b``: their sum); a
    floor itself has ``library == FLOOR``. ``setup`` runs, untimed, before every call."""

    label: str
    library: str
    floor: str
    run: Call
    setup: Call | None = None
    target: float | None = None


@dataclass
class Measured:
    """Times of one case (or why it could not run) and its ratio to its floor."""

    label: str
    library: str
    floor: str
    target: float | None
    seconds: list[float] = field(default_factory=list)
    error: str | None = None
    ratio: float | None = None
    #: median of the per-round ratios (see :func:`.harness.paired_ratio`)
    paired_ratio: float | None = None

    @property
    def median(self) -> float:
        return harness.median(self.seconds)

    def as_json(self) -> dict[str, object]:
        runs = {"median_s": self.median, "min_s": min(self.seconds),
                "spread": harness.spread(self.seconds)} if self.seconds else {}
        return {"label": self.label, "library": self.library, "floor": self.floor,
                "target": self.target, "ratio": self.ratio, "paired_ratio": self.paired_ratio,
                "error": self.error,
                "seconds": self.seconds, **runs}


@dataclass
class Settings:
    """How long to measure: ``repeats`` rounds at most, ``min_repeats`` at least, as many as
    fit in ``budget_s`` seconds per group otherwise."""

    repeats: int = 9
    min_repeats: int = 3
    calls_budget_s: float = 60.0
    switches_budget_s: float = 15.0
    peers: bool = True
    clock: str = "wall"
    #: batch sizes above which peer methods that repeat another's passes are skipped
    all_peers_up_to: int = 1


@dataclass
class ConfigResult:
    """Both groups of one model at one batch size."""

    model: str
    batch: int
    layer: str
    previous: str
    calls: list[Measured]
    switches: list[Measured]
    rounds: dict[str, int]
    forwards_during_switches: int


def call_cases(work: Workload, peers: Sequence[Peer]) -> list[Case]:
    """Floors, our one-shot calls, the peers' calls."""
    cases = [Case(FB, FLOOR, "", floors.forward_backward(work)),
             Case(F_GRAD, FLOOR, "", floors.forward_to_layer(work)),
             Case(F, FLOOR, "", floors.forward(work))]
    cases += [Case(method, ours.OURS, floor, ours.one_shot(work, method), target=CALL_TARGET)
              for method, floor in ours.FLOORS.items()]
    # the same call with the bare nn.Module (its bundle and layer catalogue are kept per module)
    cases += [Case(f"{method} (bare module)", ours.OURS, ours.FLOORS[method],
                   ours.one_shot(work, method, bare=True), target=CALL_TARGET)
              for method in ("grad_cam", "saliency")]
    cases += [Case(peer.label, peer.library, peer.floor, peer.make(work)) for peer in peers]
    return cases


def switch_cases(work: Workload, traces: TraceSet, built: floors.BuiltGraph,
                 with_peers: bool) -> tuple[list[Case], list[Call]]:
    """Switches on the warm ``traces`` and their floors on ``built``; the clean-ups."""
    layer, previous = work.layer, work.previous

    def fresh(method: str, where: str | None = None) -> Call:
        return lambda: ours.kernel(traces, method, work.fresh_targets(), where)

    def after_grad_cam(method: str, where: str | None) -> tuple[Call, Call]:
        """A new class explained by Grad-CAM at the default layer (untimed), then ``method``
        at ``where`` for that class (timed)."""
        state: dict[str, tuple[int, ...]] = {}

        def setup() -> None:
            state["targets"] = work.fresh_targets()
            ours.kernel(traces, "grad_cam", state["targets"], layer)

        return setup, lambda: ours.kernel(traces, method, state["targets"], where)

    layer_setup, layer_switch = after_grad_cam("grad_cam", previous)
    rest_setup, rest = after_grad_cam("saliency", None)
    cases = [
        Case(NEW_CLASS_LAYER, FLOOR, "", built.class_to_layer),
        Case(NEW_CLASS_INPUT, FLOOR, "", built.class_to_input),
        Case(LAYER_TO_PREVIOUS, FLOOR, "", built.layer_to_previous),
        Case(LAYER_TO_INPUT, FLOOR, "", built.layer_to_input),
        Case(F_GRAD, FLOOR, "", floors.forward_to_layer(work)),
        Case("Grad-CAM, new class", ours.OURS, NEW_CLASS_LAYER, fresh("grad_cam", layer),
             target=SWITCH_TARGET),
        Case("saliency, new class", ours.OURS, NEW_CLASS_INPUT, fresh("saliency"),
             target=SWITCH_TARGET),
        Case(LAYER_SWITCH, ours.OURS, LAYER_TO_PREVIOUS, layer_switch,
             setup=layer_setup, target=SWITCH_TARGET),
        Case("saliency after Grad-CAM", ours.OURS, LAYER_TO_INPUT, rest, setup=rest_setup,
             target=SWITCH_TARGET),
        Case("Grad-CAM → Grad-CAM++", ours.OURS, F_GRAD,
             lambda: ours.kernel(traces, "grad_cam_pp", work.targets, layer)),
        Case("Grad-CAM → LayerCAM", ours.OURS, F_GRAD,
             lambda: ours.kernel(traces, "layer_cam", work.targets, layer)),
    ]
    cleanups: list[Call] = []
    if with_peers and installed(TORCHCAM):
        call, cleanup = torchcam_switch(work)
        cases.append(Case("torch-cam GradCAM, new class (retain_graph)", TORCHCAM,
                          NEW_CLASS_LAYER, call))
        cleanups.append(cleanup)
    return cases, cleanups


def measure(cases: Sequence[Case], settings: Settings, budget_s: float
            ) -> tuple[list[Measured], int]:
    """Call every case once (a warm-up that also finds the cases that cannot run here, e.g.
    CAM on a model without a pooling head), then time the others interleaved; the rounds."""
    results = {c.label: Measured(c.label, c.library, c.floor, c.target) for c in cases}
    clock = harness.CLOCKS[settings.clock]
    runnable: list[Case] = []
    round_s = 0.0
    for case in cases:
        try:
            if case.setup is not None:
                case.setup()
            start = clock()
            case.run()
            round_s += clock() - start
            runnable.append(case)
        except Exception as exc:  # reported in the table, never hidden
            results[case.label].error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    fit = int(budget_s / round_s) if round_s > 0 else settings.repeats
    rounds = max(settings.min_repeats, min(settings.repeats, fit))
    seconds = harness.interleaved(
        {c.label: c.run for c in runnable}, repeats=rounds,
        warmup=1 if round_s < WARM_AGAIN_S else 0,
        setups={c.label: c.setup for c in runnable if c.setup is not None}, clock=clock)
    for label, values in seconds.items():
        results[label].seconds = values
    measured = list(results.values())
    _ratios(measured)
    return measured, rounds


def _ratios(measured: list[Measured]) -> None:
    floor_s = {m.label: m.seconds for m in measured if m.library == FLOOR and m.seconds}
    for m in measured:
        parts = m.floor.split("+") if m.floor else []
        if m.seconds and parts and all(p in floor_s for p in parts):
            rounds = [sum(times) for times in zip(*(floor_s[p] for p in parts), strict=True)]
            m.ratio = m.median / sum(harness.median(floor_s[p]) for p in parts)
            m.paired_ratio = harness.paired_ratio({"case": m.seconds, "floor": rounds},
                                                  "case", "floor")


def run_config(name: str, batch: int, peers: Sequence[Peer], settings: Settings,
               log: Callable[[str], None]) -> ConfigResult:
    """Both groups for ``name`` at ``batch``."""
    work = load(name, batch)
    if batch > settings.all_peers_up_to:
        peers = [peer for peer in peers if peer.same_passes_as is None]
    log(f"{name} ×{batch}: calls ({len(peers)} peer methods), layer {work.layer}")
    calls, call_rounds = measure(call_cases(work, peers), settings, settings.calls_budget_s)
    log(f"{name} ×{batch}: switches on a warm trace")
    traces = TraceSet(work.bundle, work.inputs, [work.layer])
    ours.kernel(traces, "grad_cam", work.targets, work.layer)  # the first interaction
    forwards = traces.forward_passes
    built = floors.BuiltGraph(work)
    cases, cleanups = switch_cases(work, traces, built, settings.peers)
    try:
        switches, switch_rounds = measure(cases, settings, settings.switches_budget_s)
    finally:
        for cleanup in cleanups:
            cleanup()
    result = ConfigResult(name, batch, work.layer, work.previous, calls, switches,
                          {"calls": call_rounds, "switches": switch_rounds},
                          traces.forward_passes - forwards)
    del work, traces, built, cases
    gc.collect()
    return result
