"""Browser tests: a real ``jupyter lab`` subprocess on 127.0.0.1, the loopback fake providers,
and Debian's Chromium driven by Python Playwright (never a downloaded browser).

Everything the server and browser write goes to a temp dir: ``JUPYTER_BYOK_HOME``, Jupyter's
config/data/runtime dirs, JupyterLab's user settings, HOME and the Chromium profile. The front
end served is the one built into ``jupyter_byok/labextension`` (the files the wheel ships),
put first on ``JUPYTER_PATH``; set ``BYOK_UI_USE_INSTALLED=1`` to test the installed copy.
Screenshots, console logs and the server log go to ``BYOK_UI_OUTPUT`` (default
``build/ui-test-output/``, git-ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from jupyter_byok.testing import FakeProviders
from jupyter_byok.testing.hub import FakeHub, serve_embedded

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / "jupyter_byok" / "labextension"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: A key typed into the panel in the tests: it must never come back to the browser.
CANARY = "sk-byokcanary-" + secrets.token_hex(20) + "Zq9X"


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    home: Path
    log: Path
    fake: FakeProviders
    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(repr=False)
    #: the loopback Hugging Face Hub (HF_ENDPOINT), serving the embedded SmolLM2 file
    hub: FakeHub | None = None

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {self.token}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)


def write_notebook(path: Path, sources: list[str]) -> None:
    """A notebook of code cells (no outputs) at ``path``, for the browser to open."""
    import nbformat

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(src, id=f"cell-{i}") for i, src in enumerate(sources)],
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )
    nbformat.write(nb, path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def output_dir() -> Path:
    out = Path(os.environ.get("BYOK_UI_OUTPUT", ROOT / "build" / "ui-test-output"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _settings(settings_dir: Path) -> None:
    """User settings: no news/update toasts; our plugin at its defaults."""
    apputils = settings_dir / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True, exist_ok=True)
    (apputils / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, output_dir: Path) -> Iterator[Lab]:
    with run_lab(tmp_path_factory.mktemp("lab"), output_dir / "jupyter-lab.log") as running:
        yield running


@contextlib.contextmanager
def run_lab(base: Path, log_path: Path, extra_env: dict[str, str] | None = None) -> Iterator[Lab]:
    """A ``jupyter lab`` subprocess with everything it writes under ``base`` (and its log at
    ``log_path``), the fake providers and the fake Hub; ``extra_env`` is set last."""
    if not (BUILT / "package.json").exists() and not os.environ.get("BYOK_UI_USE_INSTALLED"):
        pytest.fail(
            "the front end is not built: run `cd labextension && jlpm install && jlpm build:prod`"
        )
    dirs = {n: base / n for n in ("root", "home", "byok", "config", "data", "runtime", "jpath")}
    for d in dirs.values():
        d.mkdir()
    settings_dir = base / "lab-settings"
    _settings(settings_dir)
    if not os.environ.get("BYOK_UI_USE_INSTALLED"):
        (dirs["jpath"] / "labextensions").mkdir()
        (dirs["jpath"] / "labextensions" / "jupyter_byok").symlink_to(BUILT)
    fake = FakeProviders().start()
    fake.set_keys("openai", CANARY)
    hub = serve_embedded(FakeHub()).start()
    token = secrets.token_hex(16)
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.endswith("_API_KEY") or k.startswith(("JUPYTER", "JPY_")))
    }
    env.update(fake.env())
    env.update(hub.env(), HF_HUB_DISABLE_TELEMETRY="1")
    env.update(
        HOME=str(dirs["home"]),
        JUPYTER_BYOK_HOME=str(dirs["byok"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_PATH=str(dirs["jpath"]),
        JUPYTERLAB_SETTINGS_DIR=str(settings_dir),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    log = log_path.open("wb")
    argv = [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--no-browser"]
    argv += ["--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    argv += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={dirs['root']}"]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=dirs["root"],
    )
    url = f"http://127.0.0.1:{port}"
    lab = Lab(url, token, dirs["root"], dirs["byok"], log_path, fake, proc, env, hub)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited early:\n{log_path.read_text()[-3000:]}")
            try:
                if lab.api("GET", "/byok/status").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield lab
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        fake.stop()
        hub.stop()


@dataclass
class Capture:
    """What the browser received: HTTP response bodies and websocket frames."""

    responses: list[tuple[str, str]] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def find(self, needle: str) -> list[str]:
        hits = [url for url, body in self.responses if needle in body]
        hits += ["websocket frame" for frame in self.frames if needle in frame]
        return hits


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """Replace pytest-jupyter's autouse loop fixture here with a private loop that is never
    made current: Playwright's sync API would otherwise run on pytest-jupyter's loop, which is
    then closed under it ("Cannot close a running event loop")."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def browser(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Chromium (persistent profile in a temp dir) per test module."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium chromium-driver")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            env={**lab.env, "HOME": str(profile)},
            viewport={"width": 1400, "height": 900},
            accept_downloads=True,
        )
        # Nothing may leave 127.0.0.1.
        context.route(
            lambda url: (
                not url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:"))
            ),
            lambda route: route.abort(),
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def browser_page(
    browser: Any, output_dir: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Any, Capture]]:
    """A fresh tab for each test, with what it receives captured."""
    capture = Capture()
    page = browser.new_page()

    def on_response(response: Any) -> None:
        try:
            body = response.body().decode("utf-8", "replace")
        except Exception:  # redirects and aborted requests have no body
            return
        capture.responses.append((response.url, body))

    def on_websocket(ws: Any) -> None:
        ws.on("framereceived", lambda payload: capture.frames.append(_text(payload)))

    page.on("response", on_response)
    page.on("console", lambda msg: capture.console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: capture.console.append(f"pageerror: {exc}"))
    page.on("websocket", on_websocket)
    try:
        yield page, capture
    finally:
        name = request.node.name
        (output_dir / f"{name}-console.log").write_text("\n".join(capture.console))
        try:
            page.screenshot(path=str(output_dir / f"{name}-last.png"))
        except Exception:  # the page may already be gone
            pass
        page.close()


def _text(payload: Any) -> str:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload).decode("utf-8", "replace")
    return str(payload)
