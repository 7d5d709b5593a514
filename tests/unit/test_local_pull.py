"""``local pull`` against the loopback Hub (``jupyter_byok.testing.hub``), which serves the
embedded SmolLM2 file: progress, resume, verification, refusals, the token, the registry.

Every pull here goes through huggingface_hub to 127.0.0.1 (``HF_ENDPOINT``); nothing
leaves the machine. The Hub token is a canary: it must appear nowhere but in the
``Authorization`` header the fake Hub checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from pathlib import Path

import pytest

import jupyter_byok
from jupyter_byok.cli import build_parser
from jupyter_byok.config import load_settings
from jupyter_byok.errors import LocalModelError, ModelIdError
from jupyter_byok.keys import Keystore
from jupyter_byok.local_models import (
    Progress,
    PullCancelled,
    list_local_models,
    models_dir,
    pull,
    remove_model,
    set_default,
)
from jupyter_byok.models import default_model
from jupyter_byok.providers import local
from jupyter_byok.providers.local._registry import REGISTRY_FILE, load_registry
from jupyter_byok.testing.hub import EMBEDDED_FILENAME, EMBEDDED_REPO, FakeHub

SPEC = f"hf:{EMBEDDED_REPO}/{EMBEDDED_FILENAME}"
NAME = "smollm2-135m-instruct-q4_1"
TOKEN = "hf_byokcanary" + secrets.token_hex(16)
MiB = 1024**2


def run(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    result: int = args.func(args)
    return result


@pytest.fixture
def embedded() -> Path:
    return local.embedded_model_path()


@pytest.fixture
def size(embedded: Path) -> int:
    return embedded.stat().st_size


def _resolve_gets(hub: FakeHub) -> int:
    return sum(1 for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path)


def _left_in_models_dir() -> list[str]:
    return sorted(str(p.relative_to(models_dir())) for p in models_dir().rglob("*") if p.is_file())


def test_pull_shows_progress_verifies_registers_and_answers_a_local_call(
    fake_hub: FakeHub, size: int, embedded: Path
) -> None:
    seen: list[tuple[int, int, str]] = []

    def on_progress(progress: Progress) -> None:
        seen.append((progress.done_bytes, progress.total_bytes, progress.phase))

    fake_hub.set_rate(150 * MiB)  # ~0.6 s: several progress reports
    result = pull(SPEC, on_progress=on_progress)

    assert result.status == "pulled" and result.name == NAME
    assert result.downloaded_bytes == size and result.resumed_from == 0
    path = Path(result.path)
    assert path.parent.parent == models_dir() and path.name == EMBEDDED_FILENAME
    assert hashlib.sha256(path.read_bytes()).hexdigest() == result.sha256
    assert result.sha256 == hashlib.sha256(embedded.read_bytes()).hexdigest()
    # progress: several reports, growing, with the Hub's size as the total, then verify/done
    downloads = [s for s in seen if s[2] == "download"]
    assert len(downloads) >= 3
    assert [d for d, _, _ in downloads] == sorted(d for d, _, _ in downloads)
    assert all(total == size for _, total, _ in seen)
    assert seen[-1] == (size, size, "done") and any(s[2] == "verify" for s in seen)
    # the facts, read from the GGUF header
    assert result.facts["architecture"] == "llama"
    assert result.facts["quantization"] == "Q4_1"
    assert result.facts["context_length"] == 8192
    assert result.facts["chat_template"] is True
    assert 130e6 < result.facts["parameters"] < 140e6
    assert result.facts["ram_estimate_bytes"] > size
    # registered: resolvable, listed with its facts, usable in a real local: call
    assert local.resolve_local_model(NAME) == path
    row = next(r for r in list_local_models() if r["name"] == NAME)
    assert row["source"] == "pulled" and row["downloaded"] and row["repo"] == EMBEDDED_REPO
    assert row["quantization"] == "Q4_1" and row["last_used"] is None
    try:
        answer = jupyter_byok.complete(
            f"local:{NAME}", "What is the capital of France?", max_tokens=8, temperature=0
        )
        assert answer.text.strip() and answer.usage.output_tokens > 0
        assert answer.model == f"local:{NAME}"
    finally:
        local.unload_all()
    row = next(r for r in list_local_models() if r["name"] == NAME)
    assert row["last_used"] is not None  # recorded when the model loaded


def test_cli_pull_draws_a_terminal_bar_and_lists_the_model(
    fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("local", "pull", SPEC, "--name", "tiny") == 0
    out, err = capsys.readouterr()
    assert "pulled local:tiny (93.8 MiB, sha256 verified)" in out
    assert "llama · 135M parameters · Q4_1 · context 8192 · chat template" in out
    # tqdm's bar on stderr: the file, bytes done of the total, a speed
    assert EMBEDDED_FILENAME in err and "93.8M/93.8M" in err and "B/s" in err

    assert run("local", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "SIZE",
        "QUANT",
        "PARAMS",
        "CONTEXT",
        "RAM",
        "EST.",
        "LAST",
        "USED",
        "FILE",
    ]
    tiny = next(line for line in lines if line.startswith("local:tiny"))
    assert "93.8 MiB" in tiny and "Q4_1" in tiny and "135M" in tiny and "8192" in tiny
    assert "never" in tiny and EMBEDDED_FILENAME in tiny
    assert lines[1].startswith("local:smollm2 *")  # the default local model until changed

    # pulling it again: nothing downloaded, and it says so
    gets = _resolve_gets(fake_hub)
    assert run("local", "pull", SPEC, "--name", "tiny", "--quiet") == 0
    assert "local:tiny is already present and verified: nothing to do" in capsys.readouterr().out
    assert _resolve_gets(fake_hub) == gets


def test_already_present_is_a_no_op(fake_hub: FakeHub) -> None:
    first = pull(SPEC)
    mtime = Path(first.path).stat().st_mtime_ns
    requests = len(fake_hub.requests)
    again = pull(SPEC)
    assert again.status == "present" and again.name == first.name
    assert again.downloaded_bytes == 0 and "nothing to do" in again.message
    assert fake_hub.bytes_sent() == first.size_bytes  # one body in all
    # the only request was the file list (to learn the current checksum)
    assert [m for m, p, _ in fake_hub.requests[requests:] if "/resolve/" in p] == []
    assert Path(first.path).stat().st_mtime_ns == mtime


def test_interrupted_pull_resumes_with_fewer_bytes(fake_hub: FakeHub, size: int) -> None:
    cancel = threading.Event()

    def stop_midway(progress: Progress) -> None:
        if progress.done_bytes >= size // 2:
            cancel.set()

    fake_hub.set_rate(200 * MiB)
    with pytest.raises(PullCancelled, match="pull again to resume"):
        pull(SPEC, on_progress=stop_midway, cancel=cancel)
    part = models_dir() / EMBEDDED_REPO.replace("/", "--") / (EMBEDDED_FILENAME + ".part")
    kept = part.stat().st_size
    assert size // 2 <= kept < size
    assert load_registry()["models"] == {}  # nothing registered meanwhile
    with pytest.raises(ModelIdError, match="unknown local model"):
        local.resolve_local_model(NAME)

    fake_hub.set_rate(None)
    result = pull(SPEC)
    fake_hub.wait_idle()
    (second,) = [t for t in fake_hub.transfers if t.status == 206]
    assert second.start == kept
    assert second.sent == size - kept < size  # fewer bytes the second time
    assert result.status == "pulled" and result.resumed_from == kept
    assert result.downloaded_bytes == size - kept
    assert "resumed from" in result.message
    assert hashlib.sha256(Path(result.path).read_bytes()).hexdigest() == result.sha256
    assert not part.exists()


def test_a_dropped_connection_resumes_within_the_pull(fake_hub: FakeHub, size: int) -> None:
    fake_hub.cut_after(20 * MiB)
    result = pull(SPEC)
    fake_hub.wait_idle()
    bodies = list(fake_hub.transfers)
    assert [t.sent for t in bodies] == [20 * MiB, size - 20 * MiB]
    assert bodies[1].start == 20 * MiB and bodies[1].status == 206
    assert result.status == "pulled" and result.size_bytes == size


def test_checksum_mismatch_leaves_no_file_and_no_entry(fake_hub: FakeHub, embedded: Path) -> None:
    fake_hub.add_file("evil/SmolLM2-GGUF", "model.gguf", embedded, advertise="ab" * 32)
    with pytest.raises(LocalModelError) as info:
        pull("hf:evil/SmolLM2-GGUF/model.gguf", name="evil")
    message = str(info.value)
    assert message.startswith("checksum mismatch for model.gguf: expected sha256 " + "ab" * 32)
    assert "deleted and nothing was registered" in message and "\n" not in message
    assert _left_in_models_dir() == []
    assert load_registry()["models"] == {}
    assert "evil" not in {row["name"] for row in list_local_models()}


def test_non_gguf_files_are_refused(fake_hub: FakeHub) -> None:
    page = b"<!doctype html><html><body>" + b"not a model " * 200_000 + b"</body></html>"
    fake_hub.add_file("someone/not-a-model", "model.gguf", page)
    with pytest.raises(
        LocalModelError, match=r"model.gguf is not a GGUF file \(it starts with b'<!do'\)"
    ):
        pull("hf:someone/not-a-model/model.gguf")
    assert _left_in_models_dir() == []
    assert load_registry()["models"] == {}
    # refused from its first chunk, not after the whole body
    fake_hub.wait_idle()
    assert fake_hub.transfers[-1].sent <= 11 * MiB

    # a file name that is not .gguf is refused before anything is asked of the Hub
    before = len(fake_hub.requests)
    with pytest.raises(LocalModelError, match=r"model\.safetensors is not a GGUF file"):
        pull("hf:someone/not-a-model/model.safetensors")
    assert len(fake_hub.requests) == before

    # a GGUF magic over a truncated header is refused once downloaded, and deleted
    broken = b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 4096
    fake_hub.add_file("someone/broken", "broken.gguf", broken)
    with pytest.raises(LocalModelError, match=r"broken\.gguf was refused"):
        pull("hf:someone/broken/broken.gguf")
    assert _left_in_models_dir() == []


def test_gated_repo_without_then_with_the_keystore_token(
    fake_hub: FakeHub, embedded: Path, caplog: pytest.LogCaptureFixture, byok_home: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_hub.add_repo("meta-llama/Gated-GGUF", gated=True, token=TOKEN)
    fake_hub.add_file("meta-llama/Gated-GGUF", "gated-q4_1.gguf", embedded)
    spec = "hf:meta-llama/Gated-GGUF/gated-q4_1.gguf"

    with pytest.raises(LocalModelError) as info:
        pull(spec)
    message = str(info.value)
    assert message.startswith("meta-llama/Gated-GGUF is a gated repository and no Hub token")
    assert "jupyter byok keys set secret --name huggingface" in message
    assert not any(auth for *_, auth in fake_hub.requests)  # no token from anywhere else
    assert load_registry()["models"] == {} and _left_in_models_dir() == []

    Keystore().set("secret", "hf_wrong" + secrets.token_hex(16), "huggingface")
    with pytest.raises(LocalModelError, match="gated and the stored Hub token has no access"):
        pull(spec)

    Keystore().set("secret", TOKEN, "huggingface")
    before = len(fake_hub.requests)
    result = pull(spec)
    assert result.status == "pulled" and result.name == "gated-q4_1"
    resolve = [auth for _, path, auth in fake_hub.requests[before:] if "/resolve/" in path]
    assert resolve and all(resolve)

    # the token went only into the Authorization header
    for text in (
        json.dumps(result.to_dict()),
        (byok_home / REGISTRY_FILE).read_text(),
        json.dumps(list_local_models()),
        caplog.text,
        message,
    ):
        assert TOKEN not in text


def test_missing_repo_file_and_revision_name_what_to_do(fake_hub: FakeHub) -> None:
    with pytest.raises(LocalModelError) as info:
        pull("hf:nobody/no-such-repo/model.gguf")
    assert str(info.value) == (
        f"repository nobody/no-such-repo was not found on {fake_hub.url}: check the name; "
        "if it is private or gated, store a token with "
        "`jupyter byok keys set secret --name huggingface`"
    )
    with pytest.raises(LocalModelError, match=f"{EMBEDDED_REPO} has no file 'missing.gguf'"):
        pull(f"hf:{EMBEDDED_REPO}/missing.gguf")
    with pytest.raises(LocalModelError, match="has no revision 'v9'"):
        pull(f"hf:{EMBEDDED_REPO}/{EMBEDDED_FILENAME}@v9")
    assert load_registry()["models"] == {}


def test_disk_space_is_checked_before_downloading(fake_hub: FakeHub, size: int) -> None:
    with pytest.raises(LocalModelError) as info:
        pull(SPEC, free_space=lambda folder: 40 * MiB)
    message = str(info.value)
    assert message.startswith(f"not enough disk space for {EMBEDDED_FILENAME}: it needs 109.8 MiB")
    assert "has 40.0 MiB free" in message and "JUPYTER_BYOK_MODELS_DIR" in message
    assert _resolve_gets(fake_hub) == 0 and fake_hub.bytes_sent() == 0
    assert load_registry()["models"] == {}
    # with room, the same pull proceeds; the seam sees the models folder
    folders: list[Path] = []
    result = pull(SPEC, free_space=lambda folder: folders.append(folder) or 10 * size)
    assert result.status == "pulled" and folders == [Path(result.path).parent]


def test_quantization_choice_and_listing(fake_hub: FakeHub, embedded: Path) -> None:
    repo = "bartowski/SmolLM2-GGUF"
    fake_hub.add_file(repo, "SmolLM2-Q4_1.gguf", embedded)
    fake_hub.add_file(repo, "SmolLM2-Q8_0.gguf", b"GGUF" + b"\0" * 100)
    fake_hub.add_file(repo, "README.md", b"# readme", lfs=False)
    with pytest.raises(LocalModelError) as info:
        pull(f"hf:{repo}")
    assert "has 2 GGUF files: choose one with --quant" in str(info.value)
    assert "SmolLM2-Q4_1.gguf (93.8 MiB), SmolLM2-Q8_0.gguf (104 B)" in str(info.value)
    with pytest.raises(LocalModelError, match="no GGUF file with 'Q2_K'"):
        pull(f"hf:{repo}", quant="Q2_K")
    result = pull(f"hf:{repo}", quant="q4_1")
    assert result.name == "smollm2-q4_1" and Path(result.path).name == "SmolLM2-Q4_1.gguf"


def test_url_pull_needs_a_checksum_and_never_sends_the_token(
    fake_hub: FakeHub, embedded: Path
) -> None:
    Keystore().set("secret", TOKEN, "huggingface")
    url = fake_hub.add_url("SmolLM2.gguf", embedded)
    digest = hashlib.sha256(embedded.read_bytes()).hexdigest()
    with pytest.raises(
        LocalModelError, match="a URL pull needs the file's checksum: pass --sha256"
    ):
        pull(url)
    with pytest.raises(LocalModelError, match=r"refusing plain http for example\.com"):
        pull("http://example.com/model.gguf", sha256=digest)
    result = pull(url, sha256=digest, name="from-url")
    assert result.status == "pulled" and result.source == "url"
    assert [auth for _, path, auth in fake_hub.requests if path.startswith("/files/")] == [False]
    with pytest.raises(LocalModelError, match="checksum mismatch"):
        pull(url, sha256="0" * 64, name="other")


def test_offline_mode_refuses_to_look_up_the_hub(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LocalModelError, match="HF_HUB_OFFLINE is set"):
        pull(SPEC)
    assert fake_hub.requests == []


def test_remove_deletes_only_what_was_downloaded_and_default_follows(
    fake_hub: FakeHub, embedded: Path, tmp_path: Path
) -> None:
    pulled = pull(SPEC, name="mine")
    own = tmp_path / "own.gguf"
    own.write_bytes(embedded.read_bytes()[: 1024 * 1024])
    assert run("local", "add", "own", str(own)) == 0

    assert default_model() == "local:smollm2"
    set_default("mine")
    assert default_model() == "local:mine"
    assert jupyter_byok.models.parse_model(None).id == "local:mine"

    assert "file itself was not touched" in remove_model("own")["message"] and own.exists()
    assert "own" not in load_settings().local_models
    outcome = remove_model("mine")
    assert outcome["message"].startswith("removed local:mine and deleted smollm2-135m")
    assert not Path(pulled.path).exists()
    assert default_model() == "local:smollm2"  # the default went with it
    assert load_registry()["models"] == {}
    with pytest.raises(jupyter_byok.errors.ConfigError, match="no local model named 'mine'"):
        remove_model("mine")


def test_the_magic_runs_the_same_commands(fake_hub: FakeHub) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_byok")
    with capture_output() as cap:
        ip.run_line_magic("byok", f"local pull {SPEC} --name nb --quiet")
        ip.run_line_magic("byok", "local default nb")
        ip.run_line_magic("byok", "local")
        ip.run_line_magic("byok", "local remove nb")
        ip.run_line_magic("byok", "local remove nb")
    out = cap.stdout
    assert "pulled local:nb (93.8 MiB, sha256 verified)" in out
    assert "default local model: local:nb" in out
    assert any(line.startswith("local:nb *") for line in out.splitlines())
    assert "removed local:nb and deleted" in out
    assert "byok: no local model named 'nb'" in cap.stderr  # one red line, no traceback
    assert "Traceback" not in cap.stderr


def test_one_pull_of_a_file_at_a_time(fake_hub: FakeHub, size: int) -> None:
    started = threading.Event()
    release = threading.Event()
    outcome: list[object] = []

    def slow(progress: Progress) -> None:
        started.set()
        release.wait(30)

    def first() -> None:
        try:
            outcome.append(pull(SPEC, on_progress=slow))
        except Exception as exc:  # pragma: no cover - reported below
            outcome.append(exc)

    worker = threading.Thread(target=first)
    worker.start()
    try:
        assert started.wait(30)
        with pytest.raises(LocalModelError, match="is being pulled by another process"):
            pull(SPEC, name="second")
    finally:
        release.set()
        worker.join(60)
    assert [getattr(r, "status", r) for r in outcome] == ["pulled"]
    assert fake_hub.bytes_sent() == size  # the refused pull sent nothing


def test_a_new_revision_never_overwrites_a_registered_file(
    fake_hub: FakeHub, embedded: Path
) -> None:
    repo = "org/Moving-GGUF"
    old = fake_hub.add_file(repo, "model.gguf", embedded)
    first = pull(f"hf:{repo}/model.gguf", name="old")
    # the repo moves on: same file name, other content
    newer = embedded.read_bytes()[:-1024] + b"\0" * 1024
    fake_hub.add_file(repo, "model.gguf", newer)
    with pytest.raises(LocalModelError, match="local:old is already another model"):
        pull(f"hf:{repo}/model.gguf", name="old")
    second = pull(f"hf:{repo}/model.gguf", name="new")
    assert second.path != first.path and Path(first.path).is_file()
    assert hashlib.sha256(Path(first.path).read_bytes()).hexdigest() == old.sha256
    assert Path(second.path).name == "model.gguf"
    assert {r["name"] for r in list_local_models()} >= {"old", "new"}


def test_a_file_in_the_hugging_face_cache_is_used_where_it_is(
    fake_hub: FakeHub, embedded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = fake_hub.repos[EMBEDDED_REPO].commit
    cache = tmp_path / "hf-cache"
    folder = cache / ("models--" + EMBEDDED_REPO.replace("/", "--"))
    blob = folder / "blobs" / hashlib.sha256(embedded.read_bytes()).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(embedded.read_bytes())
    snapshot = folder / "snapshots" / commit / EMBEDDED_FILENAME
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(blob)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))

    result = pull(SPEC, name="cached")
    assert result.status == "present" and result.downloaded_bytes == 0
    assert "was in the Hugging Face cache and verifies" in result.message
    assert Path(result.path) == snapshot and _resolve_gets(fake_hub) == 0
    assert _left_in_models_dir() == []
    row = next(r for r in list_local_models() if r["name"] == "cached")
    assert row["downloaded"] is False and row["quantization"] == "Q4_1"
    # not ours: remove forgets the name and keeps the file
    assert "jupyter_byok did not download it" in remove_model("cached")["message"]
    assert blob.is_file() and snapshot.is_file()


class _ForwardProxy:
    """A plain-HTTP forward proxy on 127.0.0.1 (absolute-URI requests, Basic auth
    recorded), relaying each answer as it arrives."""

    def __init__(self) -> None:
        import http.client
        import http.server
        from urllib.parse import urlsplit

        self.seen: list[tuple[str, str, str | None, int]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _relay(self) -> None:
                target = urlsplit(self.path)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {
                    k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")
                }
                path = target.path + (f"?{target.query}" if target.query else "")
                conn.request(self.command, path, headers=headers)
                answer = conn.getresponse()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Connection", "close")
                self.end_headers()
                sent = 0
                if self.command != "HEAD":
                    while block := answer.read(1024**2):
                        self.wfile.write(block)
                        sent += len(block)
                conn.close()
                auth = self.headers.get("Proxy-Authorization")
                outer.seen.append((self.command, self.path, auth, sent))

            do_GET = do_HEAD = _relay

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_download_goes_through_the_environment_proxy(
    fake_hub: FakeHub, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model's bytes are read with http.client (one copy each: see local_models._body),
    through the proxy the environment names, with its credentials, as httpx would."""
    import base64

    proxy = _ForwardProxy()
    try:
        for name in ("no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", f"http://byok:s%40cret@127.0.0.1:{proxy.port}")
        result = pull(SPEC)
    finally:
        proxy.close()
    assert result.status == "pulled" and result.size_bytes == size
    # (huggingface_hub's own calls, the model info, went through the proxy too)
    bodies = [s for s in proxy.seen if s[0] == "GET" and "/resolve/" in s[1]]
    assert [sent for *_, sent in bodies] == [size], proxy.seen
    _, url, auth, _ = bodies[0]
    assert url.startswith(fake_hub.url) and url.endswith(EMBEDDED_FILENAME)
    assert auth == "Basic " + base64.b64encode(b"byok:s@cret").decode()
    assert hashlib.sha256(Path(result.path).read_bytes()).hexdigest() == result.sha256
