"""The course: every notebook runs offline, top to bottom, inside the test run, twice.

* **As shipped** (the exercises unsolved): every cell runs, every cell tagged ``picture``
  shows an image, every ``check`` says "not yet"; the executed notebook is written to
  ``test-artifacts/course/`` as HTML (nbconvert), and the HTML is checked for its pictures.
* **Solved**: each cell tagged ``exercise`` is replaced by its solution from
  :mod:`xai_widgets.teach` (``solution(id).code``, the id in the cell's ``exercise``
  metadata), and every check says "right".

The notebooks are committed with their outputs (readable on GitHub and nbviewer without a
kernel); the fast tests below check those stored outputs too. To refresh them after an
edit, and to measure each notebook's CPU time (the kernel process, one thread)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/test_notebooks.py [names...]
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts" / "course"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
#: notebooks of the course proper: numbered, with exercises (other engineers' too)
COURSE = [p for p in NOTEBOOKS if re.match(r"\d\d_", p.name)]
VERDICT = re.compile(r"^(✓|✗|…) (\S+): (right|wrong|not yet) — ", re.MULTILINE)
MAX_BYTES = 400_000  # a notebook committed with its outputs stays readable on GitHub


def tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def verdicts(cell: dict) -> list[tuple[str, str]]:
    """(exercise, status) of every verdict a cell printed or returned."""
    found = []
    for output in cell.get("outputs", []):
        text = output.get("text", "") or output.get("data", {}).get("text/plain", "")
        text = "".join(text) if isinstance(text, list) else text
        found += [(m.group(2), m.group(3)) for m in VERDICT.finditer(text)]
    return found


def has_image(cell: dict) -> bool:
    """An image output, or HTML with an embedded PNG (the Explorer's static copy)."""
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if "image/png" in data or "image/jpeg" in data:
            return True
        html = data.get("text/html", "")
        html = "".join(html) if isinstance(html, list) else html
        if "data:image/png;base64," in html or "data:image/jpeg;base64," in html:
            return True
    return False


def solve(notebook: nbformat.NotebookNode) -> int:
    """Replace every exercise cell by its solution; the number of cells replaced."""
    from xai_widgets import teach

    count = 0
    for cell in notebook.cells:
        if "exercise" in tags(cell):
            cell.source = teach.solution(cell.metadata["exercise"]).code
            count += 1
    return count


def execute(path: Path, solved: bool = False, measure: bool = False) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel (in its folder); with ``measure``, the kernel's CPU
    seconds land in ``notebook.metadata["cpu_seconds"]``."""
    notebook = nbformat.read(path, as_version=4)
    if solved:
        solve(notebook)
    if measure:
        notebook.cells.append(nbformat.v4.new_code_cell(
            "import time as _t; print('CPU_SECONDS', _t.process_time())"))
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    if measure:
        last = notebook.cells.pop()
        text = "".join(o.get("text", "") for o in last.outputs)
        notebook.metadata["cpu_seconds"] = float(text.split()[-1])
    return notebook


def errors(notebook: nbformat.NotebookNode) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for cell in notebook.cells
            for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def picture_problems(notebook: nbformat.NotebookNode) -> list[str]:
    return [f"cell {i} is tagged 'picture' but shows no image: {''.join(c.source)[:80]!r}"
            for i, c in enumerate(notebook.cells) if "picture" in tags(c) and not has_image(c)]


def write_html(notebook: nbformat.NotebookNode, name: str) -> Path:
    """The notebook as a standalone HTML page in test-artifacts/course/."""
    from nbconvert import HTMLExporter

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    body, _ = HTMLExporter().from_notebook_node(notebook)
    out = ARTIFACTS / f"{name}.html"
    out.write_text(body, encoding="utf-8")
    return out


def compact(notebook: nbformat.NotebookNode, limit: int = 30_000) -> None:
    """Store large PNG outputs as JPEG (quality 80, at most 1000 pixels wide): photos with
    heat maps compress ten times better that way, and a committed notebook stays a few
    hundred KB; a live kernel still shows the lossless PNG. The widgets' saved state is
    dropped: it is mostly defaults (about 190 KB for the Explorer), and a viewer that
    renders it shows the Explorer's controls around an empty canvas (ipycanvas keeps no
    pixels) and hides the static copy of the picture, which viewers without widget support
    show."""
    import io

    from PIL import Image

    def jpeg(png: str) -> str:
        picture = Image.open(io.BytesIO(base64.b64decode(png)))
        if picture.width > 1000:
            picture = picture.resize((1000, round(picture.height * 1000 / picture.width)),
                                     Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, format="JPEG", quality=80)
        return base64.b64encode(buffer.getvalue()).decode()

    def html_jpeg(match: re.Match) -> str:
        return "data:image/jpeg;base64," + jpeg(match.group(1))

    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if len(data.get("image/png", "")) > limit:
                data["image/jpeg"] = jpeg(data.pop("image/png"))
            html = data.get("text/html")
            if html and len(html) > limit:  # the Explorer's static copy
                html = "".join(html) if isinstance(html, list) else html
                data["text/html"] = re.sub(r"data:image/png;base64,([A-Za-z0-9+/=]+)",
                                           html_jpeg, html)


def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each
        monkeypatch.setenv("OMP_NUM_THREADS", "1")


# ---------------------------------------------------------------------- executed


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_as_shipped(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _one_thread(monkeypatch)
    notebook = execute(path)
    assert not errors(notebook)
    assert not picture_problems(notebook)
    statuses = [v for cell in notebook.cells if "check" in tags(cell) for v in verdicts(cell)]
    assert all(status == "not yet" for _, status in statuses), statuses
    assert len(statuses) == sum("check" in tags(c) for c in notebook.cells)
    html = write_html(notebook, path.stem).read_text(encoding="utf-8")
    pictures = sum("picture" in tags(c) for c in notebook.cells)
    assert html.count("data:image/") >= pictures, "the HTML lost pictures"


SOLVABLE = [p for p in NOTEBOOKS
            if any("exercise" in tags(c) for c in nbformat.read(p, as_version=4).cells)]


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLVABLE, ids=[p.stem for p in SOLVABLE])
def test_notebook_solved(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _one_thread(monkeypatch)
    notebook = execute(path, solved=True)
    assert not errors(notebook)
    statuses = [v for cell in notebook.cells if "check" in tags(cell) for v in verdicts(cell)]
    assert statuses, "a notebook with exercises checks them"
    assert all(status == "right" for _, status in statuses), statuses


# ---------------------------------------------------------------------- as committed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_with_outputs(path: Path) -> None:
    """Readable without a kernel: stored outputs, pictures where promised, modest size,
    exercises unsolved, no error."""
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    if "app" in path.stem:  # the Voilà page: one live app, no stored picture needed
        return
    assert all(c.get("execution_count") for c in code), "run every cell before committing"
    assert not errors(notebook)
    assert not picture_problems(notebook)
    for cell in notebook.cells:
        if "check" in tags(cell):
            assert [s for _, s in verdicts(cell)] == ["not yet"], "commit the exercises unsolved"


@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_course_notebook_shape(path: Path) -> None:
    """Each course notebook opens with what the student will learn and the paper, has a
    parameters cell, tagged exercises with a check each, and ends with a summary."""
    from xai_widgets import teach

    notebook = nbformat.read(path, as_version=4)
    first = "".join(notebook.cells[0].source)
    assert first.startswith("# ") and "learn" in first.lower()
    assert any("parameters" in tags(c) or "".join(c.source).startswith("# Parameters")
               for c in notebook.cells[:4] if c.cell_type == "code"), "a parameters cell on top"
    assert "summary" in "".join(notebook.cells[-1].source).lower()
    ids = [c.metadata.get("exercise") for c in notebook.cells if "exercise" in tags(c)]
    if path.stem in {"09_insecurities", "10_xfeatures"} and not ids:
        return  # written by other engineers; exercises as their issues land
    assert 2 <= len(ids) <= 4
    assert ids == [e.id for e in teach.exercises(path.stem)], "teach and the notebook agree"
    checks = "".join("".join(c.source) for c in notebook.cells if "check" in tags(c))
    assert all(f'"{i}"' in checks for i in ids), "every exercise is checked"


def test_index_lists_the_course() -> None:
    index = json.dumps(nbformat.read(FOLDER / "index.ipynb", as_version=4).cells)
    for path in COURSE:
        assert path.name in index, f"index.ipynb does not link {path.name}"


def test_html_images_are_pngs() -> None:
    """The stored pictures decode (a truncated base64 string would show a broken image)."""
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            for output in cell.get("outputs", []):
                data = output.get("data", {}).get("image/png")
                if data:
                    assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


if __name__ == "__main__":  # refresh the stored outputs and print CPU seconds
    names = sys.argv[1:]
    for path in NOTEBOOKS:
        if names and not any(n in path.stem for n in names):
            continue
        executed = execute(path, measure=True)
        seconds = executed.metadata.pop("cpu_seconds")
        problems = errors(executed) + picture_problems(executed)
        compact(executed)
        nbformat.write(executed, path)
        print(f"{path.name}: {seconds:.1f} s CPU, {path.stat().st_size // 1024} KiB"
              + (f"; PROBLEMS: {problems}" if problems else ""), flush=True)
