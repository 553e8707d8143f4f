"""Jupyter servers on 127.0.0.1 and headless Chromium (Debian's, driven by Playwright).

Every server runs on a copy of the notebooks in a folder of its own, with Jupyter settings,
workspaces and runtime files of its own (nothing left by another test or by a person's own
Jupyter): no news fetching, widget state saved with the notebook, every notebook cell kept in
the page (no windowing). Only the PIDs we started are stopped.

Pages come from the ``watched`` fixture: it records the browser console and the kernel
messages of the page's websockets, so that a failure says what the page saw (console, kernel
messages, a screenshot under ``test-artifacts/``), and it closes the page afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from explorer_canvas import CANVAS, canvas_pixels
from support import ARTIFACTS, ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
    # every cell in the page, so that the test can read every prompt and find every output
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
SERVER_START = 180  # seconds for a server to answer, on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def copy_notebooks(home: Path) -> Path:
    """A copy of the notebooks folder under ``home`` (servers write checkpoints and outputs)."""
    served = home / "notebooks"
    shutil.copytree(ROOT / "notebooks", served,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return served


def isolated_env(home: Path) -> dict[str, str]:
    """The environment of a server (and of its kernels): Jupyter settings, workspaces and
    runtime files under ``home/jupyter``, one thread per kernel (two pytest workers share two
    cores)."""
    jupyter = home / "jupyter"
    for name, values in SETTINGS.items():
        path = jupyter / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "JUPYTERLAB_SETTINGS_DIR": str(jupyter / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(jupyter / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime")}


def stop(server: subprocess.Popen) -> None:
    """Stop the process we started (only that PID)."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)


@contextmanager
def running(command: list[str], url: str, home: Path, ready: str = "/",
            timeout: float = SERVER_START) -> Iterator[subprocess.Popen]:
    """Run ``command`` in ``home`` (isolated environment, log in ``home/server.log``) until the
    block ends, once ``url + ready`` answers; then stop it (its PID and only it)."""
    log_path = home / "server.log"
    home.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=home,
                                  env=isolated_env(home))
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(url + ready, timeout=5)
                    break
                except urllib.error.HTTPError:  # it answers (an error page is an answer)
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{command[2]} (pid {server.pid}) did not answer at "
                                           f"{url + ready} within {timeout:.0f} s:\n"
                                           f"{log_path.read_text()[-3000:]}") from None
                    time.sleep(0.5)
            yield server
        finally:
            stop(server)


@contextmanager
def jupyter_server(app: str, home: Path) -> Iterator[tuple[str, Path]]:
    """``python -m <app>`` (``jupyterlab`` or ``notebook``) on 127.0.0.1, serving a copy of the
    notebooks without a token: yields (its URL, the folder it serves)."""
    served = copy_notebooks(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--allow-root", "--ServerApp.port_retries=0", "--ServerApp.token=",
               "--ServerApp.password=", f"--ServerApp.root_dir={served}"]
    with running(command, url, home, "/api"):
        yield url, served


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the browser tests: "
                    "apt-get install chromium chromium-driver (.ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(URL of a running JupyterLab, the folder it serves), shared by the session."""
    with jupyter_server("jupyterlab", tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture
def notebook7(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL of a running Jupyter Notebook 7, the folder it serves), for one test."""
    with jupyter_server("notebook", tmp_path) as server:
        yield server


@pytest.fixture
def voila(tmp_path: Path) -> Iterator[str]:
    """URL of Voilà serving a copy of ``explorer_app.ipynb`` (the Explorer alone), for one
    test. Voilà runs the notebook when the page is requested, so the page answers late."""
    served = copy_notebooks(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "voila", "explorer_app.ipynb", "--no-browser",
               f"--port={port}", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0"]
    with running(command, url, served, "/voila/static/"):
        yield url


def kernel_message(payload: str | bytes) -> tuple[str, str]:
    """(channel, msg_type) of a kernel websocket frame: JSON, or the binary
    ``v1.kernel.websocket.jupyter.org`` framing (offsets, then channel, header, ...)."""
    try:
        if isinstance(payload, str):
            message = json.loads(payload)
            return str(message.get("channel")), str(message["header"]["msg_type"])
        count = int.from_bytes(payload[:8], "little")
        offsets = [int.from_bytes(payload[8 * i:8 * i + 8], "little")
                   for i in range(1, count + 1)]
        channel = payload[offsets[0]:offsets[1]].decode()
        return channel, str(json.loads(payload[offsets[1]:offsets[2]])["msg_type"])
    except (ValueError, KeyError, IndexError, TypeError):
        return "?", "?"


EVERY_CELL_RAN = """() => {
    const failed = Array.from(document.querySelectorAll(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"))
        .find(e => e.textContent.includes('Traceback'));
    if (failed) return failed.textContent.slice(0, 2000);
    const prompts = document.querySelectorAll('.jp-CodeCell .jp-InputPrompt');
    return prompts.length > 0 &&
           Array.from(prompts).every(p => /\\[\\d+\\]/.test(p.textContent)); }"""


class Watched:
    """A browser page and what it saw: console messages, page errors, failed requests and
    kernel messages (``"> shell execute_request"`` sent, ``"< iopub status"`` received)."""

    def __init__(self, page, name: str) -> None:
        self.page = page
        self.name = name
        self.start = time.monotonic()
        self.console: list[str] = []
        self.kernel: list[tuple[float, str]] = []
        page.on("console", lambda m: self._note(f"console.{m.type}: {m.text[:300]}"))
        page.on("pageerror", lambda e: self._note(f"page error: {str(e)[:300]}"))
        page.on("requestfailed",
                lambda r: self._note(f"request failed: {r.url} {r.failure}"))
        page.on("websocket", self._watch)

    def _note(self, line: str) -> None:
        self.console.append(f"{time.monotonic() - self.start:7.1f}s {line}")

    def _watch(self, socket) -> None:
        if "/api/kernels/" not in socket.url:
            return
        self._note(f"kernel websocket opened: {socket.url.split('?')[0]}")
        socket.on("framesent", lambda p: self._frame(">", p))
        socket.on("framereceived", lambda p: self._frame("<", p))
        socket.on("close", lambda s: self._note(f"kernel websocket closed: {s.url}"))

    def _frame(self, direction: str, payload: str | bytes) -> None:
        channel, kind = kernel_message(payload)
        self.kernel.append((time.monotonic(), f"{direction} {channel} {kind}"))

    def count(self, message: str) -> int:
        """How many kernel messages ``message`` (e.g. ``"< shell comm_info_reply"``)."""
        return sum(seen == message for _, seen in self.kernel)

    def wait_for_kernel(self, message: str, timeout: float, why: str, after: int = 0,
                        accept_dialog: bool = False) -> None:
        """Until the page has seen ``message`` more than ``after`` times; with
        ``accept_dialog``, accept the "Select Kernel" dialog whenever it shows."""
        deadline = time.monotonic() + timeout
        while self.count(message) <= after:
            if time.monotonic() > deadline:
                self.fail(f"{why}: no '{message}' within {timeout:.0f} s")
            if accept_dialog:
                self.accept_kernel_dialog(wait=0)
            self.page.wait_for_timeout(250)  # lets Playwright deliver the events

    def screenshot(self, filename: str) -> Path:
        """The whole page as ``test-artifacts/<filename>``."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / filename
        try:
            self.page.screenshot(path=str(path), full_page=True)
        except Exception as error:  # the report matters more than the picture
            self._note(f"screenshot failed: {error}")
        return path

    def report(self) -> str:
        kinds: dict[str, int] = {}
        for _, seen in self.kernel:
            kinds[seen] = kinds.get(seen, 0) + 1
        messages = ", ".join(f"{kind} ×{n}" for kind, n in sorted(kinds.items()))
        console = "\n".join(line for line in self.console if "Not same Y.Doc" not in line)
        return (f"browser console (last 40):\n{chr(10).join(console.splitlines()[-40:])}\n"
                f"kernel messages seen: {messages or 'none'}")

    def wait_until_connected(self, timeout: float = 300, after: int = 0) -> None:
        """Until the kernel answered and the widget manager has asked it for its widgets,
        accepting the "Select Kernel" dialog if it shows (on a busy machine Notebook 7 and
        JupyterLab ask when the kernel specs come late; the kernel starts only then).

        The notebook's execution indicator says ``data-status="idle"`` before any kernel is
        connected: a "Run All" clicked then is lost (the dialog is up, or there is no kernel
        to send to) and, the notebook being saved with its outputs, every prompt already
        shows an execution count. The widget manager asks the kernel for its widgets
        (``comm_info_request``) once it is connected; its reply says that the page is ready
        to run cells and to show widgets."""
        self.wait_for_kernel("< shell kernel_info_reply", timeout,
                             "the kernel never connected", after, accept_dialog=True)
        self.wait_for_kernel("< shell comm_info_reply", timeout,
                             "the widget manager never asked the kernel for its widgets", after,
                             accept_dialog=True)

    def run_all_cells(self, timeout: float = 900) -> None:
        """On a notebook's page: wait for the kernel and the widget manager, "Run All Cells",
        and wait until the kernel has answered every code cell and every prompt shows its
        execution count (failing at once on a traceback). The kernel's replies are counted,
        not the prompts alone: the saved notebook's prompts have counts before anything ran."""
        page = self.page
        page.wait_for_selector(".jp-Notebook", timeout=300_000)
        self.wait_until_connected()
        cells = page.locator(".jp-CodeCell").count()
        replies = self.count("< shell execute_reply")
        requests = self.count("> shell execute_request")
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        self.wait_for_kernel("> shell execute_request", 60, "Run All Cells sent nothing",
                             requests)
        deadline = time.monotonic() + timeout
        while True:
            state = page.evaluate(EVERY_CELL_RAN)
            if isinstance(state, str):
                self.fail(f"a cell failed:\n{state}")
            if state is True and self.count("< shell execute_reply") - replies >= cells:
                return
            if time.monotonic() > deadline:
                self.fail(f"the cells did not all run within {timeout:.0f} s "
                          f"({self.count('< shell execute_reply') - replies} replies for "
                          f"{cells} code cells)")
            page.wait_for_timeout(500)

    def accept_kernel_dialog(self, wait: float = 5) -> None:
        """Accept the "Select Kernel" dialog if it shows within ``wait`` seconds: the default
        (this venv's Python) is right."""
        dialog = self.page.locator(".jp-Dialog button.jp-mod-accept")
        try:
            if wait:
                dialog.wait_for(timeout=wait * 1000)
            if dialog.count():
                dialog.first.click(timeout=10_000)
                self._note("accepted the kernel dialog")
        except Exception:  # no dialog this time, or it went away
            return

    def picture(self, timeout: float = 180) -> np.ndarray:
        """The Explorer's canvas once it shows a photo (not an empty canvas)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.page.locator(CANVAS).count():
                pixels = canvas_pixels(self.page)
                if pixels.std() > 10:
                    return pixels
            self.page.wait_for_timeout(250)
        self.fail(f"the Explorer's canvas stayed empty for {timeout:.0f} s")

    def fail(self, message: str) -> NoReturn:
        path = self.screenshot(f"{self.name}_failure.png")
        pytest.fail(f"{message}\nscreenshot: {path}\n{self.report()}", pytrace=False)


@pytest.fixture
def watched(browser, request: pytest.FixtureRequest) -> Iterator[Callable[..., Watched]]:
    """``watched(width, height)`` -> a new page (a context of its own) whose console and kernel
    messages are recorded; closed after the test."""
    pages: list[Watched] = []
    name = re.sub(r"\W+", "_", request.node.name)

    def new(width: int = 1400, height: int = 1000) -> Watched:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(60_000)
        pages.append(Watched(page, name if not pages else f"{name}_{len(pages)}"))
        return pages[-1]

    yield new
    for watched_page in pages:
        with suppress(Exception):  # the browser may be gone already
            watched_page.page.context.close()
