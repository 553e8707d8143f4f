"""The quickstart in a real JupyterLab and a real browser: run every cell, then use the
Explorer through the page (class, layer, a dragged rectangle) and read the canvas back."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time

import numpy as np
import pytest
from explorer_canvas import CANVAS, canvas_pixels
from PIL import Image
from playwright.sync_api import expect
from support import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]



def wait_for_change(page, before: np.ndarray, region: tuple[slice, slice] = (slice(None),) * 2,
                    threshold: float = 0.5, timeout: float = 120) -> np.ndarray:
    """Poll the canvas until ``region`` differs from ``before`` by ``threshold`` on average."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = canvas_pixels(page)
        if now.shape != before.shape or np.abs(now[region] - before[region]).mean() > threshold:
            return now
        time.sleep(0.25)
    raise AssertionError("the canvas did not change")


def wait_until_still(page, seconds: float = 2.0, timeout: float = 60) -> np.ndarray:
    """The canvas once it has not changed for ``seconds`` (live updates have settled)."""
    deadline = time.monotonic() + timeout
    last, since = canvas_pixels(page), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = canvas_pixels(page)
        if now.shape != last.shape or np.abs(now - last).max() > 0:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return now
    raise AssertionError("the canvas kept changing")


def dropdown(page, label: str):
    return page.locator(f".xai-explorer .widget-dropdown:has(label:text-is('{label}')) select")


def test_quickstart_explorer_in_a_browser(lab, watched) -> None:
    url, served = lab
    shown = watched(1500, 1100)
    page = shown.page
    page.goto(f"{url}/lab/tree/01_quickstart.ipynb", timeout=300_000)
    shown.run_all_cells()  # fails on a traceback
    explorer = page.locator(".xai-explorer")
    explorer.scroll_into_view_if_needed()
    first = shown.picture()
    caption = explorer.locator(".xai-caption").inner_text()
    assert caption.startswith("Grad-CAM · tiger cat")

    # another class: the heat layer changes, the highlighted row follows
    explorer.locator("button:has-text('Egyptian cat')").click()
    second = wait_for_change(page, first)
    expect(explorer.locator(".xai-caption")).to_contain_text("Egyptian cat", timeout=60_000)

    # another layer: a finer map
    layer = dropdown(page, "layer")
    option = next(o for o in layer.locator("option").all_inner_texts()
                  if o.replace("\xa0", " ").startswith("blocks.4 "))
    layer.select_option(label=option)
    third = wait_for_change(page, second)
    expect(explorer.locator(".xai-caption")).to_contain_text("layer blocks.4", timeout=60_000)

    # drag a rectangle: that region is hidden from the model, the probabilities move
    box = page.locator(CANVAS).bounding_box()
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    for step in range(1, 6):
        page.mouse.move(box["x"] + (0.2 + 0.08 * step) * box["width"],
                        box["y"] + (0.2 + 0.08 * step) * box["height"])
    page.mouse.up()
    page.wait_for_function("() => /[▼▲]/.test(document.querySelector('.xai-explorer').innerText)",
                           timeout=60_000)
    inside = (slice(int(0.45 * third.shape[0]), int(0.58 * third.shape[0])),  # the far corner
              slice(int(0.45 * third.shape[1]), int(0.58 * third.shape[1])))
    outside = (slice(int(0.75 * third.shape[0]), None), slice(int(0.75 * third.shape[1]), None))
    wait_for_change(page, third, inside, threshold=10)  # the photo is hidden there
    occluded = wait_until_still(page)
    assert np.abs(occluded[outside] - third[outside]).mean() < 2  # and only there

    # the metrics panel: deletion and insertion curves of the map on view, with their areas
    metrics = explorer.locator(".xai-metrics")
    metrics.locator("select").select_option(label="14 steps")
    metrics.locator("button:has-text('deletion / insertion')").click()
    expect(metrics).to_contain_text("deletion area", timeout=120_000)
    plot = metrics.locator("img").first
    expect(plot).to_be_visible()
    assert plot.bounding_box()["width"] > 200

    # an optimisation runs as a job on a worker thread: its mask and loss curve update live
    dropdown(page, "method").select_option(label="Guided feature inversion")
    expect(explorer.locator(".xai-caption")).to_contain_text("% done", timeout=120_000)
    expect(explorer.locator(".xai-caption")).not_to_contain_text("% done", timeout=300_000)
    expect(explorer.locator(".xai-caption")).to_contain_text("Guided feature inversion")
    expect(explorer).to_contain_text("Du, Liu, Song, Hu")  # the controls follow the scene
    loss = explorer.locator(".xai-loss")
    expect(loss).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    explorer.screenshot(path=str(ARTIFACTS / "optimisation.png"))
    dropdown(page, "method").select_option(label="Grad-CAM")
    expect(explorer.locator(".xai-caption")).to_contain_text("Grad-CAM", timeout=60_000)
    occluded = wait_until_still(page)
    ARTIFACTS.mkdir(exist_ok=True)
    explorer.screenshot(path=str(ARTIFACTS / "explorer.png"))

    # a reload connects a new client to the same kernel: the last frame is replayed
    page.click(".lm-MenuBar-itemLabel:text-is('File')")
    page.click("text=Save Notebook")
    page.wait_for_selector(".jp-mod-dirty", state="detached", timeout=60_000)
    page.reload()
    page.wait_for_selector(".jp-Notebook", timeout=120_000)
    shown.accept_kernel_dialog()
    page.locator(".xai-explorer").scroll_into_view_if_needed(timeout=120_000)
    assert not page.locator(".xai-static").first.is_visible()  # live: only the app shows
    replayed = shown.picture()
    assert np.abs(replayed - occluded).mean() < 2

    # the saved notebook, exported to HTML without a kernel, still shows the last picture
    html_path = served / "01_quickstart.html"
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html",
                    str(served / "01_quickstart.ipynb")], check=True, capture_output=True)
    static = watched(1500, 1100).page
    static.goto(html_path.as_uri())
    static.wait_for_load_state("load")
    copy = static.locator(".xai-static img")
    copy.scroll_into_view_if_needed()
    assert copy.is_visible()
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(
        copy.get_attribute("src").split(",", 1)[1]))).convert("RGB")).astype(np.int16)
    assert shown.shape == occluded.shape
    assert np.abs(shown - occluded).mean() < 3  # the last frame (the canvas adds the box)
    static.screenshot(path=str(ARTIFACTS / "exported.png"))
