"""XFeatures: train an x-feature network (XNN) for one class and look at its x-features.

Controls: the class, the image folder (default: the offline espresso set built from the
photos that ship in packages, :mod:`xai_widgets.xfeatures.demo`), the number of x-features and
the fine-tuning epochs. *Train* extracts the features (cached on disk) and trains on the job
runner's worker thread, with a progress bar and the loss curves as they grow; *Cancel* stops it
between two epochs. Then pick an image (the sample photos, or any image given to
:meth:`XFeatures.show`): a row of x-feature maps in order of contribution, each with its
contribution, and the contribution bars; a click on a map's button shows it large, at the layer
of the layer control. Beside them: the train-set mean contributions and their correlation
matrix, and the faithfulness on held-out images. Errors appear in the status line.

The state is plain Python (``xnn``, ``maps``, ``selected``, ``status``), so the widget is
tested by setting controls and comparing with direct calls.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w
import numpy as np
from PIL import Image

from ..errors import XaiError
from ..figures import figure_png
from ..images import sample_images
from ..jobs import Failed, Finished, Job, JobEvent, JobRunner, Progressed, Stopped
from ..models import ModelBundle, load_model
from ..xfeatures import XNN, FeatureSet, XFeatureMaps, train
from ..xfeatures.demo import espresso_folder
from ..xfeatures.maps import INPUT

DEFAULT_CLASS = "espresso"


def _png(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class XFeatures:
    """The x-feature app for ``bundle`` (default: the embedded model).

    ``images``: the folder (or list) the XNN is trained on (default: the offline demo set);
    ``photos``: the images offered for explanation (default: the sample photos);
    ``settings``: further :class:`~xai_widgets.xfeatures.SRAEConfig` fields for training;
    ``threaded=False`` trains in the calling thread (scripts, tests).
    """

    def __init__(self, bundle: ModelBundle | Any | None = None, images: Any = None,
                 cls: str | int = DEFAULT_CLASS, n_features: int = 5, epochs: int | None = None,
                 photos: dict[str, Any] | None = None, seed: int = 0, threaded: bool = True,
                 cache_dir: Any = None, **settings: Any) -> None:
        self.bundle = load_model() if bundle is None else ModelBundle.wrap(bundle)
        self.images = images
        self.photos = dict(photos) if photos is not None else sample_images()
        self.settings = settings
        self.seed = seed
        self.cache_dir = cache_dir
        self.xnn: XNN | None = None
        self.data: FeatureSet | None = None
        self.maps: XFeatureMaps | None = None
        self.selected = 0
        self.series: dict[str, Any] = {}
        self.runner = JobRunner(self._on_event, threaded=threaded)

        names = list(self.bundle.class_names or [])
        self.cls = w.Combobox(value=str(cls), options=names, description="class",
                              ensure_option=False)
        self.folder = w.Text(value="" if images is None or not isinstance(images, str)
                             else images, placeholder="demo set (photos that ship in packages)",
                             description="folder")
        self.n_features = w.BoundedIntText(value=n_features, min=1, max=20,
                                           description="x-features")
        self.epochs = w.BoundedIntText(value=epochs or 0, min=0, max=100_000,
                                       description="epochs", tooltip="0: the original schedule")
        self.train_button = w.Button(description="Train", button_style="primary")
        self.cancel_button = w.Button(description="Cancel", disabled=True)
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="training")
        self.losses = w.Image(format="png")
        self.photo = w.Dropdown(options=list(self.photos), description="image")
        layer_names = [INPUT, *self.bundle.layers.names]
        self.layer = w.Dropdown(options=layer_names, value=self.bundle.layers.default,
                                description="layer")
        self.row = w.HBox()
        self.large = w.Image(format="png")
        self.bars = w.Image(format="png")
        self.diagnostics = w.Image(format="png")
        self.faithfulness = w.HTML()
        self.status = w.HTML()

        self.train_button.on_click(lambda _: self.start())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.photo.observe(lambda _: self.refresh(), names="value")
        self.layer.observe(lambda _: self.refresh(), names="value")
        self.root = w.VBox([
            w.HBox([self.cls, self.folder]),
            w.HBox([self.n_features, self.epochs, self.train_button, self.cancel_button]),
            w.HBox([self.progress, self.losses]),
            w.HBox([self.photo, self.layer]),
            self.row,
            w.HBox([self.large, self.bars, w.VBox([self.diagnostics, self.faithfulness])]),
            self.status,
        ])

    # ------------------------------------------------------------------ training

    def _images(self) -> Any:
        folder = self.folder.value.strip()
        if folder:
            return folder
        return self.images if self.images is not None else espresso_folder()

    def start(self) -> None:
        """Extract the features and train an XNN with the current controls (a job)."""
        self.runner.drop("xfeatures-train")
        cls: Any = self.cls.value.strip()
        cls = int(cls) if cls.isdigit() else cls
        n_features, epochs = int(self.n_features.value), int(self.epochs.value) or None
        images = self._images()
        self.status.value = "extracting features..."
        self.series = {}

        def compute(progress: Any) -> XNN:
            data = FeatureSet.extract(self.bundle, images, cls=cls, cache_dir=self.cache_dir,
                                      progress=lambda f: progress(0.1 * f, None))
            self.data = data
            return train(data, n_features=n_features, seed=self.seed, epochs=epochs,
                         progress=lambda f, **s: progress(0.1 + 0.9 * f, s), **self.settings)

        self.train_button.disabled, self.cancel_button.disabled = True, False
        self.runner.submit(Job("xfeatures-train", (str(cls), n_features, epochs), compute))

    def cancel(self) -> None:
        self.runner.drop("xfeatures-train")

    def wait(self, timeout: float | None = None) -> bool:
        return self.runner.wait(timeout)

    def _on_event(self, event: JobEvent) -> None:
        if isinstance(event, Progressed):
            self.progress.value = float(event.fraction)
            if isinstance(event.preview, dict) and event.preview:
                self.series = event.preview
                self.losses.value = self._loss_png()
            return
        if isinstance(event, (Finished, Failed, Stopped)):
            self.train_button.disabled, self.cancel_button.disabled = False, True
        if isinstance(event, Finished):
            self.progress.value = 1.0
            self.xnn = event.result
            self.status.value = f"trained: {self.xnn!r}"
            self._show_training()
            self.refresh()
        elif isinstance(event, Failed):
            self._error(event.error)
        elif isinstance(event, Stopped):
            self.status.value = "training cancelled"

    def _error(self, error: Exception) -> None:
        kind = "error" if isinstance(error, XaiError) else f"unexpected {type(error).__name__}"
        self.status.value = f"<span style='color:#b2182b'>{kind}: {error}</span>"

    def _loss_png(self) -> bytes:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(4.5, 1.8), layout="constrained")
        axes = figure.add_subplot()
        for name in ("loss", "prediction", "reconstruction", "pull_away", "pretrain"):
            values = self.series.get(name)
            if values is not None and len(values):
                axes.plot(np.asarray(values), label=name)
        axes.set_xlabel("epoch")
        axes.set_yscale("log")
        axes.legend(fontsize=6)
        return figure_png(figure)

    def _show_training(self) -> None:
        assert self.xnn is not None
        self.diagnostics.value = figure_png(self.xnn.diagnostics().figure())
        f = self.xnn.faithfulness()
        self.faithfulness.value = (f"held out: R² = {f.r2:.3f}, mean |ŷ − y| = "
                                   f"{f.mean_abs_error:.3f}")

    # ------------------------------------------------------------------ maps

    def show(self, image: Any, name: str = "my image") -> None:
        """Add ``image`` to the image list and show it."""
        self.photos[name] = image
        self.photo.options = list(self.photos)
        self.photo.value = name

    def refresh(self) -> None:
        """Maps of the chosen image at the chosen layer (nothing before training)."""
        if self.xnn is None:
            return
        try:
            self.maps = self.xnn.explain(self.photos[self.photo.value], layer=self.layer.value)
        except XaiError as exc:
            self._error(exc)
            return
        frames = self.maps.frames(0)
        titles = self.maps.titles(0)
        cells = []
        for j, (frame, title) in enumerate(zip(frames, titles, strict=True)):
            picture = w.Image(value=_png(frame.composite()), format="png",
                              layout=w.Layout(width="150px"))
            button = w.Button(description=title, layout=w.Layout(width="150px"))
            button.on_click(lambda _, j=j: self.select(j))
            cells.append(w.VBox([picture, button]))
        self.row.children = tuple(cells)
        from matplotlib.figure import Figure

        from ..xfeatures.xnn import _contribution_bars

        figure = Figure(figsize=(3.2, 2.4), layout="constrained")
        _contribution_bars(figure.add_subplot(), self.maps.contributions.contribution[0])
        self.bars.value = figure_png(figure)
        self.select(min(self.selected, len(frames) - 1))

    def select(self, index: int) -> None:
        """Show the ``index``-th map (in order of contribution) large."""
        self.selected = index
        if self.maps is None:
            return
        frame = self.maps.frames(0)[index]
        self.large.value = _png(frame.composite())
        self.status.value = f"{self.maps.titles(0)[index]} at {self.maps.layer}"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.root)
