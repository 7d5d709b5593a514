"""``%byok keys set`` in a real JupyterLab: the key form the labextension renders.

The key typed into the form goes from the browser straight to the server's
``POST /byok/keys``. It must then be listed (masked), and be nowhere else: not in what the
browser sent to the kernel, not in the kernel (its globals and ``In``/``Out`` history), not
in the output's DOM, not in the password field after saving, not in the saved ``.ipynb``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from .conftest import Capture, Lab, write_notebook

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore:coroutine 'ServerApp._cleanup' was never awaited"),
]

NOTEBOOK = "byok-keyform.ipynb"
MIME = "application/vnd.jupyter.byok.keyform+json"
WAIT = 20_000
#: Typed into the form only; the kernel is given it reversed, so no cell source holds it.
KEY = "sk-keyformcanary-" + secrets.token_hex(20) + "Kf7w"

SCAN = """\
def _byok_scan(reversed_key):
    needle = reversed_key[::-1]
    hits = [n for n, v in list(globals().items())
            if not n.startswith('_byok_scan') and needle in repr(v)]
    hits += [f'In[{i}]' for i, src in enumerate(In) if needle in src]
    hits += [f'Out[{k}]' for k, v in Out.items() if needle in repr(v)]
    return hits
print('BYOK-SCAN', _byok_scan(%r), len(globals()), len(In))
"""


def _notebook(lab: Lab) -> None:
    sources = ["%load_ext jupyter_byok", "%byok keys set openai --name work", SCAN % KEY[::-1]]
    write_notebook(lab.root / NOTEBOOK, sources)


def _run(page: Any, cells: Any, index: int, attempts: int = 1) -> None:
    """Run one cell and wait for its execution count. A cell that may run twice is retried
    once if a busy machine lost the first Shift+Enter (the editor not focused yet)."""
    from playwright.sync_api import Error as PlaywrightError

    prompt = cells.nth(index).locator(".jp-InputPrompt")
    for attempt in range(attempts):
        cells.nth(index).locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(
                "el => /\\[\\d+\\]/.test(el.textContent)",
                arg=prompt.element_handle(),
                timeout=90_000 if attempt == attempts - 1 else 20_000,
            )
            return
        except PlaywrightError:
            if attempt == attempts - 1:
                raise


def test_key_form_stores_the_key_from_the_browser_only(
    lab: Lab, browser_page: tuple[Any, Capture]
) -> None:
    page, capture = browser_page
    sent_frames: list[str] = []
    posts: list[tuple[str, str]] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framesent",
            lambda p: sent_frames.append(p if isinstance(p, str) else bytes(p).decode("latin-1")),
        ),
    )
    page.on(
        "request",
        lambda r: posts.append((r.url, r.post_data or "")) if r.method == "POST" else None,
    )
    _notebook(lab)
    try:
        # A workspace of its own: the default one must not reopen this notebook elsewhere.
        page.goto(f"{lab.url}/lab/workspaces/byok-keyform/tree/{NOTEBOOK}?token={lab.token}")
        page.wait_for_selector("body[data-byok-activated='true']", state="attached", timeout=60_000)
        page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
        page.locator("#jp-main-statusbar", has_text="| Idle").wait_for(timeout=60_000)
        cells = page.locator(".jp-NotebookPanel .jp-Cell")
        _run(page, cells, 0, attempts=2)
        _run(page, cells, 1, attempts=2)

        # The form, labelled for screen readers, themed by JupyterLab's variables.
        output = cells.nth(1).locator(".jp-OutputArea")
        form = output.locator("form.jp-byok-keyform-form")
        form.wait_for(state="visible", timeout=WAIT)
        assert form.get_attribute("aria-label") == "Store the openai@work key"
        secret = output.get_by_label("Key for openai@work", exact=True)
        assert secret.get_attribute("type") == "password"
        assert secret.get_attribute("autocomplete") == "new-password"
        save = output.get_by_role("button", name="Save the openai@work key")
        assert save.inner_text() == "Save"
        # themed: the field's colours are JupyterLab's input variables
        themed = page.evaluate(
            """el => {
                const probe = document.createElement('div');
                probe.style.background = 'var(--jp-input-background)';
                probe.style.borderColor = 'var(--jp-input-border-color)';
                document.body.appendChild(probe);
                const want = getComputedStyle(probe), got = getComputedStyle(el);
                const same = [want.backgroundColor, want.borderTopColor]
                    .join() === [got.backgroundColor, got.borderTopColor].join();
                probe.remove();
                return same;
            }""",
            secret.element_handle(),
        )
        assert themed
        # no form falls back to the text: the renderer is the one in use
        assert "in a terminal" not in output.inner_text()

        secret.fill(KEY)
        save.click()
        status = output.locator(".jp-byok-keyform-status[data-ok]")
        status.wait_for(state="visible", timeout=WAIT)
        assert status.get_attribute("data-ok") == "true", status.inner_text()
        assert status.inner_text() == "stored openai@work (…Kf7w)"
        assert status.get_attribute("role") == "status"
        assert secret.input_value() == ""

        # Stored on the server, listed masked to the last 4 characters.
        listed = lab.api("GET", "/byok/keys")
        assert KEY not in listed.text
        stored = [k for k in listed.json()["keys"] if k["provider"] == "openai"]
        assert [(k["name"], k["last4"], k["label"]) for k in stored] == [
            ("work", "Kf7w", "openai@work")
        ]
        # The key went from the page to POST /byok/keys, and nowhere else.
        carrying = [url for url, body in posts if KEY in body]
        assert carrying and all(url.split("?")[0].endswith("/byok/keys") for url in carrying)
        assert len(carrying) == 1, carrying

        # Not in the output's DOM, nor in any field, storage or output model text.
        assert KEY not in output.inner_text() and KEY not in output.inner_html()
        assert KEY not in page.content()
        values = page.evaluate(
            "() => [...document.querySelectorAll('input, textarea')].map(e => e.value).join('\\n')"
        )
        assert KEY not in values
        assert KEY not in page.evaluate(
            "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
        )

        # Not in the kernel: a cell searches its globals and In/Out history.
        _run(page, cells, 2)
        scan = cells.nth(2).locator(".jp-OutputArea-output", has_text="BYOK-SCAN")
        scan.wait_for(timeout=WAIT)
        text = scan.inner_text()
        assert text.startswith("BYOK-SCAN [] "), text
        globals_count, in_count = (int(n) for n in text.split()[-2:])
        assert globals_count > 5 and in_count == 4  # the scan really looked at something

        # Nothing the browser sent over a kernel websocket carried the key.
        assert sent_frames, "no websocket frames were sent"
        assert any("execute_request" in f for f in sent_frames)
        assert not [f for f in sent_frames if KEY in f]
        assert capture.find(KEY) == []

        # Not in the saved notebook: the output holds the bundle's names only.
        with page.expect_response(
            lambda r: r.request.method == "PUT" and f"/api/contents/{NOTEBOOK}" in r.url,
            timeout=WAIT,
        ) as put:
            page.locator(".jp-NotebookPanel-toolbar [data-command='docmanager:save']").click()
        assert put.value.status == 200, put.value.status
        saved = (lab.root / NOTEBOOK).read_text()
        assert MIME in saved and "BYOK-SCAN []" in saved, "the notebook was not saved"
        assert KEY not in saved and "Kf7w" not in saved
        bundles = [
            o["data"]
            for c in json.loads(saved)["cells"]
            for o in c.get("outputs", [])
            if MIME in o.get("data", {})
        ]
        assert [b[MIME] for b in bundles] == [
            {"provider": "openai", "name": "work", "tier": None, "label": "openai@work"}
        ]
        fallback = "".join(bundles[0]["text/plain"])  # nbformat may split text into lines
        assert "use `jupyter byok keys set openai --name work` in a terminal" in fallback
        assert KEY not in lab.log.read_text(errors="replace")
    finally:
        for key in lab.api("GET", "/byok/keys").json()["keys"]:
            if (key["provider"], key["name"]) == ("openai", "work"):
                lab.api("DELETE", f"/byok/keys/{key['id']}")
        for session in lab.api("GET", "/api/sessions").json():
            if session.get("path") == NOTEBOOK:
                lab.api("DELETE", f"/api/sessions/{session['id']}")


def test_builder_links_to_the_panel_instead_of_a_key_field(
    lab: Lab, browser_page: tuple[Any, Capture]
) -> None:
    """The workflow builder has no key field: its link runs the panel's add-key command."""
    page, _ = browser_page
    name = "byok-builder-link.ipynb"
    write_notebook(lab.root / name, ["import jupyter_byok as byok\nbyok.PipelineBuilder()"])
    try:
        page.goto(f"{lab.url}/lab/workspaces/byok-builder/tree/{name}?token={lab.token}")
        page.wait_for_selector("body[data-byok-activated='true']", state="attached", timeout=60_000)
        page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
        page.locator("#jp-main-statusbar", has_text="| Idle").wait_for(timeout=60_000)
        cells = page.locator(".jp-NotebookPanel .jp-Cell")
        _run(page, cells, 0, attempts=2)
        output = cells.nth(0).locator(".jp-OutputArea")
        link = output.locator("a[data-commandlinker-command='byok:add-key']")
        link.wait_for(state="visible", timeout=60_000)
        assert link.inner_text() == "add a key in the BYOK panel"
        assert output.locator("input[type=password]").count() == 0
        assert output.get_by_role("button", name="Refresh models").count() == 1
        panel = page.locator("#jupyter-byok-panel")
        keys = panel.locator("[data-tabpanel='keys']")
        assert not keys.is_visible()
        link.click()
        # Some JupyterLab versions ask before a link in an output runs a command.
        page.wait_for_function(
            "() => document.querySelector('.jp-Dialog') || document.querySelector("
            "'#jupyter-byok-panel [data-tabpanel=keys]')?.checkVisibility()",
            timeout=WAIT,
        )
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            assert "BYOK: Add an API Key" in dialog.inner_text()
            dialog.get_by_role("button", name="Run", exact=True).click()
        keys.wait_for(state="visible", timeout=WAIT)
        assert panel.get_by_label("API key", exact=True).get_attribute("type") == "password"
    finally:
        for session in lab.api("GET", "/api/sessions").json():
            if session.get("path") == name:
                lab.api("DELETE", f"/api/sessions/{session['id']}")
