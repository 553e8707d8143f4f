"""Controls generated from the registry and the model: parameters, classes, display."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets

from ..kernels.spec import LayerName, MethodSpec, Param
from ..layers import LayerCatalog
from ..render import CHANNELS, GRADIENT_VIEWS, POLARITIES, SIGNED_COLORMAPS, UNSIGNED_COLORMAPS

STYLE = {"description_width": "92px"}
WIDE = widgets.Layout(width="300px")


def parameter_control(param: Param, layers: LayerCatalog | None = None
                      ) -> widgets.ValueWidget:
    """A control for one method parameter, chosen from its type and range; a layer-valued
    parameter offers its choices and, given the model's ``layers``, every candidate layer
    (main blocks first, with their shapes)."""
    common: dict[str, Any] = {"description": param.name, "value": param.default,
                              "tooltip": param.help, "style": STYLE,
                              "layout": WIDE}
    if isinstance(param, LayerName) and layers is not None:
        return widgets.Dropdown(options=[_layer_option(name, layers)
                                         for name in param.layer_options(layers)], **common)
    if param.kind is bool:
        return widgets.Checkbox(indent=False, **common)
    if param.kind is str:
        return widgets.Dropdown(options=list(param.options), **common)
    bounded = param.low is not None and param.high is not None
    if param.kind is int:
        if bounded and param.high - param.low <= 10_000:  # type: ignore[operator]
            return widgets.IntSlider(min=int(param.low), max=int(param.high),  # type: ignore[arg-type]
                                     continuous_update=False, **common)
        return widgets.BoundedIntText(min=int(param.low if param.low is not None else -2**31),
                                      max=int(param.high if param.high is not None else 2**31),
                                      **common)
    if bounded:
        return widgets.FloatSlider(min=param.low, max=param.high,
                                   step=(param.high - param.low) / 100,  # type: ignore[operator]
                                   continuous_update=False, **common)
    return widgets.BoundedFloatText(min=param.low if param.low is not None else -1e12,
                                    max=param.high if param.high is not None else 1e12, **common)


def parameter_controls(spec: MethodSpec, layers: LayerCatalog | None = None
                       ) -> dict[str, widgets.ValueWidget]:
    """The controls of ``spec``'s parameters by name; ``layers`` (the model's catalogue)
    fills the menus of layer-valued parameters, which otherwise offer only their choices."""
    return {param.name: parameter_control(param, layers) for param in spec.params}


def _layer_option(name: str, layers: LayerCatalog) -> tuple[str, str]:
    """A menu entry ``(label, value)``: a layer with its shape ``C×h×w``, a choice as it is."""
    if name not in layers.names:
        return name, name
    return f"{name}  {'×'.join(map(str, layers[name].shape))}", name


class ClassList:
    """The top classes with probability bars, the explained one highlighted; a click explains
    a class, a search box reaches every class. While a region is occluded, each row also shows
    the probability without that region."""

    def __init__(self, rows: int, on_pick: Callable[[int], None]) -> None:
        self._on_pick = on_pick
        self._indices: list[int] = []
        self._names: list[str] = []
        self.buttons = [widgets.Button(layout=widgets.Layout(width="170px", height="26px"))
                        for _ in range(rows + 1)]
        self.bars = [widgets.HTML(layout=widgets.Layout(width="150px")) for _ in self.buttons]
        for position, button in enumerate(self.buttons):
            button.on_click(lambda _b, p=position: self._click(p))
        self.rows = [widgets.HBox([b, h]) for b, h in zip(self.buttons, self.bars, strict=True)]
        self.search = widgets.Combobox(placeholder="search all classes…", ensure_option=True,
                                       layout=widgets.Layout(width="300px"))
        self.search.observe(self._searched, names="value")
        self.widget = widgets.VBox([widgets.HTML("<b>Class</b>"), *self.rows, self.search])

    def set_names(self, names: Sequence[str]) -> None:
        if list(self.search.options) != list(names):
            self.search.options = tuple(dict.fromkeys(names))  # unique, in order
        self._names = list(names)

    def show(self, top: Sequence[tuple[int, str, float]], target: int, target_name: str,
             target_probability: float, occluded: dict[int, float] | None) -> None:
        shown = list(top)
        if target not in [i for i, _, _ in shown]:
            shown.append((target, target_name, target_probability))
        self._indices = [i for i, _, _ in shown]
        for position, row in enumerate(self.rows):
            if position >= len(shown):
                row.layout.display = "none"
                continue
            index, name, probability = shown[position]
            row.layout.display = ""
            button = self.buttons[position]
            button.description = name
            button.tooltip = f"explain class {index}: {name}"
            button.button_style = "info" if index == target else ""
            after = None if occluded is None else occluded.get(index)
            self.bars[position].value = _bar(probability, after)

    def _click(self, position: int) -> None:
        if position < len(self._indices):
            self._on_pick(self._indices[position])

    def _searched(self, change: dict[str, Any]) -> None:
        name = change["new"]
        if name and name in self._names:
            self._on_pick(self._names.index(name))
            self.search.value = ""


def _bar(probability: float, after: float | None) -> str:
    width = max(1, round(70 * probability))
    text = f"{100 * probability:.1f}%"
    if after is not None:
        arrow = "▼" if after < probability else "▲"
        text += f" {arrow} {100 * after:.1f}%"
    return (f'<div style="display:flex;align-items:center;gap:4px;font-size:12px">'
            f'<div style="width:{width}px;height:10px;background:#4c78a8"></div>'
            f"<span>{html.escape(text)}</span></div>")


#: the option value of "the method's default" (``None`` in RenderSettings): a string, because
#: a Dropdown option whose value is None can show as a blank selection in the browser
_DEFAULT = "default"


class DisplayControls:
    """Colormap, opacity, polarity, channel reduction, gradient view, percentile clip."""

    def __init__(self, on_change: Callable[[dict[str, Any]], None]) -> None:
        self._on_change = on_change
        self.cmap = widgets.Dropdown(
            options=[("auto", _DEFAULT), *[(c, c) for c in UNSIGNED_COLORMAPS + SIGNED_COLORMAPS]],
            description="colormap", style=STYLE, layout=WIDE)
        self.opacity = widgets.FloatSlider(0.5, min=0, max=1, step=0.05, description="opacity",
                                           style=STYLE, layout=WIDE)
        self.polarity = widgets.Dropdown(options=list(POLARITIES), description="polarity",
                                         style=STYLE, layout=WIDE)
        self.channels = widgets.Dropdown(options=list(CHANNELS), description="channels",
                                         style=STYLE, layout=WIDE)
        self.gradient_view = widgets.Dropdown(
            options=[("heat map", _DEFAULT), *[(v, v) for v in GRADIENT_VIEWS]],
            description="rendering", style=STYLE, layout=WIDE)
        self.clip_percentile = widgets.FloatSlider(100, min=90, max=100, step=0.5,
                                                   description="clip at pct", style=STYLE,
                                                   layout=WIDE)
        self.fields = {"cmap": self.cmap, "opacity": self.opacity, "polarity": self.polarity,
                       "channels": self.channels, "gradient_view": self.gradient_view,
                       "clip_percentile": self.clip_percentile}
        for name, control in self.fields.items():
            control.observe(lambda change, n=name: self._on_change(
                {n: None if change["new"] == _DEFAULT else change["new"]}), names="value")
        self.widget = widgets.VBox([widgets.HTML("<b>Display</b>"), *self.fields.values()])

    def show(self, settings: Any, per_channel: bool) -> None:
        for name, control in self.fields.items():
            value = getattr(settings, name)
            value = _DEFAULT if value is None else value
            if control.value != value:
                control.value = value
        for control in (self.channels, self.gradient_view):
            control.disabled = not per_channel
