"""The course outside JupyterLab, in headless Chromium: the Explorer as a Voilà page, the
quickstart in Jupyter Notebook 7, and the HTML build of every notebook (no kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from support import ARTIFACTS, ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]



def test_explorer_app_in_voila(voila: str, watched) -> None:
    shown = watched(1300, 1000)
    page = shown.page
    page.goto(voila, timeout=300_000)  # Voilà answers once the notebook has run
    pixels = shown.picture()
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert page.locator(".xai-explorer select").count() >= 3  # the controls are there
    text = page.inner_text("body")
    assert "xai-widgets Explorer" in text  # the markdown shows
    assert "import xai_widgets" not in text and "xw.Explorer()" not in text  # no code
    assert "Traceback" not in page.content()
    shown.screenshot("voila_explorer.png")


def test_quickstart_in_notebook_7(notebook7: tuple[str, Path], watched) -> None:
    url, served = notebook7
    shown = watched(1400, 1000)
    page = shown.page
    page.goto(f"{url}/notebooks/01_quickstart.ipynb", timeout=300_000)
    shown.run_all_cells()
    # the widget view is built once its model and display message have come, later on a busy
    # machine; the output area says "Loading widget..." or "Error displaying widget" meanwhile
    try:
        page.wait_for_selector(".xai-explorer", state="attached", timeout=300_000)
    except Exception:  # Playwright's TimeoutError
        outputs = page.locator(".jp-CodeCell").nth(1).locator(".jp-OutputArea").inner_text()
        shown.fail(f"no Explorer view 300 s after every cell ran; its cell's outputs say: "
                   f"{outputs[:500]!r}")
    page.locator(".xai-explorer").scroll_into_view_if_needed()
    shown.picture()
    pictures = page.locator(".jp-RenderedImage img")
    expected = sum("picture" in c.get("metadata", {}).get("tags", []) for c in
                   nbformat.read(served / "01_quickstart.ipynb", as_version=4).cells)
    assert pictures.count() >= expected - 1  # every picture cell but the Explorer's
    assert page.get_by_text("not yet").count() >= 2  # the exercises' checks ran
    shown.screenshot("notebook7_quickstart.png")


def test_course_html_shows_pictures(watched) -> None:
    """nbconvert's HTML of every committed notebook: each picture cell's image loads."""
    from nbconvert import HTMLExporter

    out = ARTIFACTS / "course-html"
    out.mkdir(parents=True, exist_ok=True)
    page = watched(1200, 900).page
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        expected = sum("picture" in c.get("metadata", {}).get("tags", [])
                       for c in notebook.cells if c.get("outputs"))
        body, _ = HTMLExporter().from_notebook_node(notebook)
        html = out / f"{path.stem}.html"
        html.write_text(body, encoding="utf-8")
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        loaded = page.evaluate("""() => Array.from(document.images).filter(
            i => i.complete && i.naturalWidth > 16).length""")
        assert loaded >= expected, f"{path.name}: {loaded} pictures of {expected}"
