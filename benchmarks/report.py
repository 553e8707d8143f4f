"""The core benchmark's results as Markdown tables (``core.md``) and raw data (``core.json``)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import harness, ours
from .bench_core import FLOOR, SWITCH_TARGET, ConfigResult, Measured
from .floors import F_GRAD, FB, F
from .gap import GapRow
from .peers import CAPTUM, PEERS, PGC, TORCHCAM

LIBRARIES = (ours.OURS, CAPTUM, PGC, TORCHCAM)
FLOOR_NAMES = {
    FB: "forward + backward to the input",
    F_GRAD: "forward with autograd + backward to the layer",
    F: "one forward, no autograd",
    FB + "+" + F_GRAD: "fb + f_grad: a layer gradient and a backward under another rule",
}
MIB = 2**20


@dataclass
class Results:
    """Everything one run measured."""

    machine: dict[str, str]
    settings: dict[str, object]
    configs: list[ConfigResult] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)
    memory_setting: str = ""
    gaps: list[GapRow] = field(default_factory=list)
    wall_s: float = 0.0


def _name(config: ConfigResult) -> str:
    return f"{config.model} ×{config.batch}"


def _find(rows: Sequence[Measured], label: str, library: str | None = None) -> Measured | None:
    return next((m for m in rows if m.label == label
                 and (library is None or m.library == library)), None)


def _ratio_cell(m: Measured | None) -> str:
    if m is None:
        return "—"
    if m.error is not None:
        return "n/a"
    if m.ratio is None:
        return "—"
    missed = m.target is not None and round(m.ratio, 2) > m.target
    return f"**{m.ratio:.2f}** ✗" if missed else f"{m.ratio:.2f}"


def _floor_cell(m: Measured | None) -> str:
    if m is None or not m.seconds:
        return "—"
    return f"{m.median * 1000:.1f} ms ±{harness.spread(m.seconds):.0%}"


def _span(values: Sequence[float]) -> str:
    if not values:
        return "—"
    low, high = min(values), max(values)
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}"


def peer_switch_ratio(config: ConfigResult, peer_label: str, floor: str) -> float | None:
    """A peer that reruns everything: its one-call time over the switch floor."""
    call = _find(config.calls, peer_label)
    base = _find(config.switches, floor, FLOOR)
    if call is None or base is None or not call.seconds or not base.seconds:
        return None
    return call.median / base.median


def _ratios(configs: Sequence[ConfigResult], label: str, library: str | None = None,
            switches: bool = False) -> list[float]:
    """The ratios of one case over every configuration that measured it."""
    found = [_find(c.switches if switches else c.calls, label, library) for c in configs]
    return [m.ratio for m in found if m is not None and m.ratio is not None]


#: headline rows for switches: (row, our case, its floor, the method the peers rerun)
SWITCH_ROWS = (("class switch, Grad-CAM", "Grad-CAM, new class", "new class → layer",
                "grad_cam"),
               ("class switch, saliency", "saliency, new class", "new class → input",
                "saliency"))


def headline(results: Results) -> str:
    """Our ratio and each peer library's, as ranges over every model and batch measured."""
    configs = results.configs
    rows: list[list[object]] = []
    for method, floor in ours.FLOORS.items():
        row: list[object] = [method, floor, f"≤ {ours_target(configs, method)}",
                             _span(_ratios(configs, method, ours.OURS))]
        for library in LIBRARIES[1:]:
            row.append("; ".join(f"{_span(_ratios(configs, p.label))} ({p.method})"
                                 for p in PEERS if p.library == library
                                 and p.same_as == method) or "—")
        rows.append(row)
    for name, ours_label, floor, method in SWITCH_ROWS:
        row = [name, f"backward {floor.split(' ', 2)[2]} on a built graph", f"≤ {SWITCH_TARGET}",
               _span(_ratios(configs, ours_label, ours.OURS, switches=True))]
        for library in LIBRARIES[1:]:
            warm = [m.ratio for c in configs for m in c.switches
                    if m.library == library and m.floor == floor and m.ratio is not None]
            reruns = [f"{_span(rerun)} ({p.method} reruns all)" for p in PEERS
                      if p.library == library and p.same_as == method
                      and (rerun := [r for c in configs
                                     if (r := peer_switch_ratio(c, p.label, floor))])]
            row.append(f"{_span(warm)} (retain_graph)" if warm else "; ".join(reruns) or "—")
        rows.append(row)
    return harness.markdown_table(["method", "floor", "target", *LIBRARIES], rows)


def ours_target(configs: Sequence[ConfigResult], method: str) -> float | None:
    return next((m.target for c in configs if (m := _find(c.calls, method, ours.OURS))), None)


def calls_tables(configs: Sequence[ConfigResult]) -> str:
    """One table per floor: its time, then our method(s) and the peers' on it."""
    header = ["method", "library", *map(_name, configs)]
    parts = []
    for floor, meaning in FLOOR_NAMES.items():
        labels = [(m.label, m.library) for m in configs[0].calls if m.floor == floor]
        if not labels:
            continue
        rows: list[list[object]] = []
        for part in floor.split("+"):
            rows.append([f"*floor {part}*", "", *(_floor_cell(_find(c.calls, part, FLOOR))
                                                   for c in configs)])
        rows += [[label, library, *(_ratio_cell(_find(c.calls, label, library))
                                    for c in configs)] for label, library in labels]
        parts.append(f"**{floor}**: {meaning}\n\n" + harness.markdown_table(header, rows))
    return "\n\n".join(parts)


def switches_table(configs: Sequence[ConfigResult]) -> str:
    """Switches on a warm trace, the floors' times, the peers' reruns."""
    header = ["switch", "floor", "library", *map(_name, configs)]
    first = configs[0].switches
    rows: list[list[object]] = [
        [f"*{m.label}*", "", "", *(_floor_cell(_find(c.switches, m.label, FLOOR))
                                   for c in configs)]
        for m in first if m.library == FLOOR]
    rows += [[m.label, m.floor, m.library,
              *(_ratio_cell(_find(c.switches, m.label, m.library)) for c in configs)]
             for m in first if m.library != FLOOR]
    for peer in PEERS:
        floor = {"grad_cam": "new class → layer", "saliency": "new class → input"}.get(
            peer.same_as)
        if floor is None or _find(configs[0].calls, peer.label) is None:
            continue
        ratios = [peer_switch_ratio(c, peer.label, floor) for c in configs]
        rows.append([f"{peer.method}, new class (reruns all)", floor, peer.library,
                     *("—" if r is None else f"{r:.0f}" for r in ratios)])
    rows.append(["new forward passes during the switches", "", ours.OURS,
                 *(c.forwards_during_switches for c in configs)])
    rows.append(["layer switch", "", "", *(f"{c.layer} → {c.previous}" for c in configs)])
    return harness.markdown_table(header, rows)


def memory_table(results: Results) -> str:
    captum = results.memory.get(CAPTUM)
    rows: list[list[object]] = [
        [library, f"{peak / MIB:.0f}", f"{peak / captum:.2f}" if captum else "—"]
        for library, peak in results.memory.items()]
    return harness.markdown_table(["library", "peak above the model (MiB)", "vs captum"], rows)


def gap_table(rows: Sequence[GapRow]) -> str:
    peers = sorted({label for row in rows for label in row.peers})
    header = ["model", "rectifiers", "ours vs plain gradient",
              *(f"{p} vs ours / vs gradient" for p in peers)]
    body: list[list[object]] = [
        [row.model, row.rectifiers, f"{row.ours_vs_gradient:.3f}",
         *(f"{row.peers[p][0]:.3f} / {row.peers[p][1]:.3f}" if p in row.peers else "—"
           for p in peers)] for row in rows]
    return harness.markdown_table(header, body)


def misses(configs: Sequence[ConfigResult]) -> list[str]:
    """Every one of our cases above its target, with the noise of its floor in that run."""
    lines = []
    for c in configs:
        for group in (c.calls, c.switches):
            floors = {m.label: m for m in group if m.library == FLOOR}
            for m in group:
                if m.target is None or m.ratio is None or round(m.ratio, 2) <= m.target:
                    continue
                noise = max(harness.spread(floors[p].seconds) for p in m.floor.split("+"))
                lines.append(f"{m.label} on {_name(c)}: {m.ratio:.2f} > {m.target} "
                             f"(paired {m.paired_ratio:.2f}; floor ±{noise:.0%})")
    return lines


def markdown(results: Results) -> str:
    machine = ", ".join(f"{k} {v}" for k, v in results.machine.items())
    settings = ", ".join(f"{k} {v}" for k, v in results.settings.items())
    parts = [
        "# Core benchmark: ratios to the floors",
        f"Measured on: {machine}.\n\nSettings: {settings}; whole run "
        f"{results.wall_s / 60:.1f} min. Ratio = median time of the case over the median time "
        "of its floor, both timed in the same process, interleaved round by round after a "
        "warm-up; floors are given as median ± half the interquartile range. ✗: above our "
        "target.",
    ]
    if results.configs:
        parts += ["## Headline (range over the models and batch sizes below)",
                  headline(results),
                  "## One call, ratio to its floor", calls_tables(results.configs),
                  "## Switches on a warm trace, ratio to the backward they cannot avoid",
                  switches_table(results.configs)]
        found = misses(results.configs)
        parts += ["## Our cases above their targets",
                  "\n".join(f"- {line}" for line in found) if found else "None."]
    if results.memory:
        parts += [f"## Peak memory of Grad-CAM, {results.memory_setting}",
                  memory_table(results)]
    if results.gaps:
        parts += ["## Guided backprop: relative L2 distance between maps (batch 1)",
                  gap_table(results.gaps)]
    return "\n\n".join(parts) + "\n"


def as_json(results: Results) -> dict[str, object]:
    return {
        "machine": results.machine, "settings": results.settings, "wall_s": results.wall_s,
        "configs": [{**{k: v for k, v in asdict(c).items() if k not in ("calls", "switches")},
                     "calls": [m.as_json() for m in c.calls],
                     "switches": [m.as_json() for m in c.switches]} for c in results.configs],
        "memory": {"setting": results.memory_setting,
                   "peak_mib": {k: v / MIB for k, v in results.memory.items()}},
        "gaps": [asdict(row) for row in results.gaps],
    }


def write(results: Results, stem: Path) -> str:
    """Write ``stem.md`` and ``stem.json`` (each through a ``.tmp`` file); return the Markdown."""
    text = markdown(results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".md", text),
                            (".json", json.dumps(as_json(results), indent=1) + "\n")):
        temporary = stem.with_suffix(suffix + ".tmp")
        temporary.write_text(content)
        os.replace(temporary, stem.with_suffix(suffix))
    return text
