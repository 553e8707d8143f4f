"""``InsecurityPanel``: the controls and the picture of deliberative explanations (Wang &
Vasconcelos, "Deliberative Explanations: visualizing network insecurities", NeurIPS 2019) for
one :class:`~xai_widgets.deliberative.Analysis` at a time. The standalone
:class:`~xai_widgets.widgets.insecurities.Insecurities` app and the Explorer's insecurities
view are its two hosts: each gives it a :class:`~xai_widgets.widgets.canvas.CanvasView` to
draw on, lays out :attr:`~InsecurityPanel.controls` and :attr:`~InsecurityPanel.caption`, and
hands it an analysis with :meth:`~InsecurityPanel.show`.

Controls: the difficulty score (entropy / cs, and hp when a predictor is given), the
attribution (activation × gradient, integrated gradients, gradient–Hessian), normalisation of
the maps, the ranked pairs with their scores (a pick shows that pair's insecurity; the first
entry is the difficulty map), the area fraction of the segment and the display (ours / the
original's); a status line (top classes, difficulty score, pairs, layer, errors) and a caption
that says what the picture shows.

Costs: the analysis caches the class maps per attribution and the difficulty maps per score,
so a pair, area or display change runs no pass, and a difficulty switch only the difficulty's
backward. Integrated gradients (a forward and a backward per chunk of path points) run as a
job on a :class:`~xai_widgets.jobs.JobRunner`, with a progress bar and a cancel button; a newer
request supersedes the running one, and the last good picture stays on view meanwhile.
"""

from __future__ import annotations

import html
import logging
import threading
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from torch import nn

from ..deliberative import Analysis, InsecurityResult
from ..deliberative.ambiguity import check_area, upsample
from ..deliberative.maps import ATTRIBUTIONS
from ..deliberative.result import STYLES
from ..errors import ParameterError, XaiError
from ..jobs import (
    Failed,
    Finished,
    Job,
    JobEvent,
    JobRunner,
    Progress,
    Progressed,
    Started,
)
from ..scope import model_lock
from .canvas import CanvasView

log = logging.getLogger(__name__)

DIFFICULTY_MAP = -1  # the entry of the pair list that shows the difficulty map
LABELS = {"gradient": "activation × gradient", "integrated_gradients": "integrated gradients",
          "gradient_hessian": "gradient–Hessian (difficulty)"}
TIPS = {"entropy": "normalised entropy", "cs": "1 − max probability",
        "hp": "hardness predictor"}
JOB = "insecurities"  # the kind of the panel's jobs
HIDDEN = "none"
BUTTONS = {"description_width": "92px", "button_width": "88px"}

#: the panel's rules for its host's stylesheet: status and caption wrap
CSS = """.xai-insecurities-controls .widget-html-content,
.xai-insecurities-caption .widget-html-content { white-space: normal; line-height: 1.3; }"""


class InsecurityPanel:
    """Insecurity controls drawing on ``view`` (see the module docstring).

    ``predictor``: a hardness predictor (adds the ``hp`` difficulty); ``ig_steps``: points on
    the integrated-gradients path; ``threaded=False`` runs integrated gradients in the calling
    thread; ``lock``: the host's lock around its view (the job's results draw under it).
    The shown picture is :attr:`picture` (uint8 ``(H, W, 3)``), its result :attr:`result`
    and its caption :attr:`caption_text`.
    """

    def __init__(self, view: CanvasView, *, difficulty: str = "entropy",
                 attribution: str = "gradient", predictor: nn.Module | None = None,
                 area: float = 0.1, ig_steps: int = 32, threaded: bool = True,
                 lock: threading.RLock | None = None) -> None:
        options = ["entropy", "cs"] + (["hp"] if predictor is not None else [])
        if difficulty not in options or attribution not in ATTRIBUTIONS:
            raise ParameterError(
                f"difficulty must be one of {', '.join(map(repr, options))} ('hp' needs "
                f"predictor=...) and attribution one of {', '.join(map(repr, ATTRIBUTIONS))}; "
                f"got {difficulty!r}, {attribution!r}")
        if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
            raise ParameterError(f"ig_steps is the number of points on the integrated-"
                                 f"gradients path, an integer >= 1 (e.g. 32), got {ig_steps!r}")
        check_area(area)
        self.view = view
        self.predictor = predictor
        self.ig_steps = ig_steps
        self.difficulty = widgets.ToggleButtons(
            options=options, value=difficulty, description="difficulty",
            tooltips=[TIPS[o] for o in options], style=BUTTONS)
        self.attribution = widgets.Dropdown(options=[(LABELS[a], a) for a in ATTRIBUTIONS],
                                            value=attribution, description="attribution")
        self.normalise = widgets.Checkbox(value=True, description="normalise each map",
                                          indent=False)
        self.pairs = widgets.Select(options=[], rows=7, description="pairs",
                                    layout=widgets.Layout(width="310px"))
        self.area = widgets.FloatSlider(value=area, min=0.01, max=1.0, step=0.01,
                                        description="area", readout_format=".0%")
        self.style = widgets.ToggleButtons(options=list(STYLES), value="ours",
                                           description="display",
                                           tooltips=["the map over the photo, the segment "
                                                     "outlined", "the segment alone, the rest "
                                                     "darkened (the paper's display)"],
                                           style=BUTTONS)
        self.progress = widgets.FloatProgress(min=0.0, max=1.0,
                                              layout=widgets.Layout(width="200px"))
        self.cancel_button = widgets.Button(description="cancel", icon="stop",
                                            layout=widgets.Layout(width="90px"))
        self.working = widgets.HBox([self.progress, self.cancel_button],
                                    layout=widgets.Layout(display=HIDDEN))
        self.status = widgets.HTML(layout=widgets.Layout(width="310px"))
        self.caption = widgets.HTML(layout=widgets.Layout(width=view.widget.layout.width))
        self.caption.add_class("xai-insecurities-caption")
        self.controls = widgets.VBox([self.difficulty, self.attribution, self.normalise,
                                      self.pairs, self.area, self.style, self.working,
                                      self.status])
        self.controls.add_class("xai-insecurities-controls")
        self.runner = JobRunner(self._job_event, threaded)
        self.analysis: Analysis | None = None
        self.result: InsecurityResult | None = None
        self.picture: np.ndarray | None = None
        self.caption_text = ""
        #: draw on the view (a host with another view on its canvas turns this off)
        self.active = True
        self._lock = lock if lock is not None else threading.RLock()
        self._local = threading.local()  # per thread: is it setting the controls itself?
        self._job: Job | None = None
        self._shown: torch.Tensor | None = None  # the raw map on view, at the layer
        self._values: np.ndarray | None = None  # ... at the display's size, on first hover
        self._frames = 0
        for control in (self.difficulty, self.attribution, self.normalise):
            control.observe(self._recompute, names="value")
        for control in (self.pairs, self.area, self.style):
            control.observe(self._redraw, names="value")
        self.cancel_button.on_click(lambda _button: self.cancel())

    # ------------------------------------------------------------------ the host's calls

    def show(self, analysis: Analysis) -> None:
        """Explain ``analysis`` (a new image, model or layer) with the current controls,
        from its most insecure pair."""
        with self._lock:
            self.analysis, self.result = analysis, None
            self._recompute()

    def fail(self, error: BaseException) -> None:
        """Say in the status line why nothing new is shown; the picture stays."""
        if not isinstance(error, XaiError):
            log.exception("the insecurities view caught an unexpected error", exc_info=error)
        text = str(error) if isinstance(error, XaiError) else \
            f"{type(error).__name__}: {error}"
        self._set_status(f"⚠ {text}", "error")

    def draw(self) -> None:
        """Put the current picture on the view (when :attr:`active`)."""
        with self._lock:
            if not self.active or self.picture is None:
                return
            transparent = np.zeros((*self.picture.shape[:2], 4), dtype=np.uint8)
            self._frames += 1  # every picture is a new photo layer (the overlay is baked in)
            self.view.show(self.picture, transparent, photo_key=(JOB, self._frames))

    def cancel(self) -> None:
        """Stop the running computation; the controls go back to what is on view."""
        with self._lock:
            if not self.runner.drop():
                return
            result = self.result
            if result is not None:
                self._echo = True
                try:
                    self.difficulty.value = result.difficulty.kind
                    self.attribution.value = result.attribution
                    self.normalise.value = result.normalise
                finally:
                    self._echo = False
            self._set_status("cancelled; the picture shows the last result", "info")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no computation runs (True), or ``timeout`` seconds passed (False)."""
        return self.runner.wait(timeout)

    def value_at(self, x: float, y: float) -> float | None:
        """The value of the map on view (a pair's insecurity, or the difficulty map) at a
        display pixel."""
        with self._lock:
            if self._shown is None or self.picture is None:
                return None
            if self._values is None:
                size = (int(self.picture.shape[0]), int(self.picture.shape[1]))
                self._values = upsample(self._shown.double(), size).numpy()
            row, column = int(y), int(x)
            if 0 <= row < self._values.shape[0] and 0 <= column < self._values.shape[1]:
                return float(self._values[row, column])
            return None

    @property
    def busy(self) -> bool:
        """True while a computation runs or waits."""
        return self.runner.busy()

    # ------------------------------------------------------------------ compute

    @property
    def _echo(self) -> bool:
        """True while this thread sets the controls itself: their change events are echoes."""
        return bool(getattr(self._local, "echo", False))

    @_echo.setter
    def _echo(self, value: bool) -> None:
        self._local.echo = value

    def _recompute(self, _change: Any = None) -> None:
        if self._echo:
            return
        with self._lock:
            analysis = self.analysis
            if analysis is None:
                return
            self.runner.drop()  # whatever runs is no longer what is asked for
            difficulty, attribution = self.difficulty.value, self.attribution.value
            options: dict[str, Any] = dict(
                difficulty=difficulty, attribution=attribution, normalise=self.normalise.value,
                predictor=self.predictor if difficulty == "hp" else None,
                ig_steps=self.ig_steps)
            if attribution == "integrated_gradients":
                self._submit(analysis, options)
                return
            try:
                with model_lock(analysis.bundle.model):
                    result = analysis.result(0, **options)
            except Exception as exc:  # the status says why; the last good picture stays
                self.fail(exc)
                return
            self._present(result)

    def _submit(self, analysis: Analysis, options: dict[str, Any]) -> None:
        """Integrated gradients as a job (the model's lock is paused between chunks)."""
        def compute(progress: Progress) -> InsecurityResult:
            return analysis.result(0, **options,
                                   progress=lambda fraction, **_series: progress(fraction, None))

        key = (id(analysis), options["difficulty"], options["normalise"], self.ig_steps)
        self._job = Job(JOB, key, compute, lock=model_lock(analysis.bundle.model))
        self.runner.submit(self._job)

    def _job_event(self, event: JobEvent) -> None:
        with self._lock:
            if event.job is not self._job:
                return  # a job superseded meanwhile
            if isinstance(event, (Started, Progressed)):
                fraction = event.fraction if isinstance(event, Progressed) else 0.0
                self.progress.value = fraction
                self.working.layout.display = ""
                self._set_status(f"⏳ integrated gradients ({self.ig_steps} steps): "
                                 f"{fraction:.0%}", "busy")
                return
            self._job = None
            self.working.layout.display = HIDDEN
            if isinstance(event, Finished):
                self._present(event.result)
            elif isinstance(event, Failed):
                self.fail(event.error)
            # Stopped: whoever stopped it says why (a cancel) or shows what replaces it

    # ------------------------------------------------------------------ draw

    def _present(self, result: InsecurityResult) -> None:
        """A new result: its pairs in the list (the pair on view kept when it is still one,
        e.g. across attributions), the status line, the picture."""
        chosen = self._chosen()
        self.result = result
        options = [(f"difficulty map · {result.difficulty.kind} {result.difficulty.score:.3f}",
                    DIFFICULTY_MAP)]
        options += [(f"{p.label} · {p.score:.3g}", rank) for rank, p in enumerate(result.pairs)]
        same = [rank for rank, p in enumerate(result.pairs) if (p.a, p.b) == chosen]
        value = DIFFICULTY_MAP if chosen == DIFFICULTY_MAP or not result.pairs else \
            same[0] if same else 0
        self._echo = True
        try:
            self.pairs.options = options
            self.pairs.value = value
        finally:
            self._echo = False
        top = html.escape(", ".join(f"{name} {p:.0%}" for _, name, p in result.classes[:3]))
        found = f"{len(result.pairs)} pairs" if result.pairs else \
            "no ambiguous pair: the difficulty map is shown"
        self._set_status(f"{top}<br>{html.escape(result.difficulty.label)}: "
                         f"{result.difficulty.score:.3f} · {found} · layer "
                         f"{html.escape(result.layer)}", "info", escaped=True)
        self._redraw()

    def _chosen(self) -> tuple[int, int] | int | None:
        """The pair on view as its two classes, or :data:`DIFFICULTY_MAP`, or ``None``."""
        rank = self.pairs.value
        if self.result is None or rank is None:
            return None
        if rank == DIFFICULTY_MAP:
            return DIFFICULTY_MAP
        pair = self.result.pairs[rank]
        return (pair.a, pair.b)

    def _redraw(self, _change: Any = None) -> None:
        if self._echo:
            return
        with self._lock:
            result = self.result
            if result is None:
                return
            rank = self.pairs.value
            scores = f"{result.difficulty.kind} {result.difficulty.score:.3f}"
            if rank is None or rank == DIFFICULTY_MAP or not result.pairs:
                self.picture = result.difficulty_picture()
                self._shown = result.difficulty.map
                self.caption_text = (f"difficulty map: {result.difficulty.label} "
                                     f"{result.difficulty.score:.3f} "
                                     f"({LABELS[result.attribution]}, layer {result.layer})")
            else:
                pair = result.pairs[rank]
                self.picture = result.picture(pair, self.area.value, self.style.value)
                self._shown = pair.map
                self.caption_text = (f"insecurity {pair.label} · score {pair.score:.3g} · "
                                     f"top {self.area.value:.0%} · difficulty {scores} "
                                     f"({LABELS[result.attribution]}, layer {result.layer})")
            self._values = None
            self.caption.value = f"<b>{html.escape(self.caption_text)}</b>"
            self.draw()

    def _set_status(self, text: str, level: str, escaped: bool = False) -> None:
        body = text if escaped else html.escape(text)
        self.status.value = f'<span class="xai-status-{level}">{body}</span>'
