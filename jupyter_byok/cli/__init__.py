"""``jupyter byok ...``: keys, status and the offline demo from a terminal.

Secrets are read from a hidden prompt, or from standard input when it is not a
terminal; never from the command line, where they would land in shell history and in
``ps`` output. Expected failures print one line to stderr and exit 1.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ByokError
from .render import out as _out

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _split_label(label: str, name: str | None) -> tuple[str, str]:
    """``openai@work`` or ``openai --name work`` -> (``openai``, ``work``)."""
    provider, _, at_name = label.partition("@")
    return provider, name or at_name or "default"


def _read_secret(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    # Not a terminal: read at most a little more than the largest key we accept,
    # so that a mistaken pipe of a huge file fails fast with a clear message.
    from ..keys import MAX_SECRET_LENGTH

    return sys.stdin.read(MAX_SECRET_LENGTH + 1)


def _keystore() -> Any:
    from ..keys import Keystore

    return Keystore()


# --------------------------------------------------------------------------- keys
def cmd_keys_set(args: argparse.Namespace) -> int:
    from ..redact import KEY_PATTERNS

    provider, name = _split_label(args.provider, args.name)
    from ..keys import label as key_label

    label = key_label(provider, name)
    value = _read_secret(f"Key for {label} (input hidden): ")
    store = _keystore()
    info = store.set(
        provider, value, name, tier=args.tier, base_url=args.base_url, allow_http=args.allow_http
    )
    pattern = KEY_PATTERNS.get(provider)
    if pattern is not None and not pattern.fullmatch(value.strip()):
        _out(f"note: this does not look like a usual {provider} key; stored anyway")
    _out(f"stored {info.label} (…{info.last4 or '****'}, fingerprint {info.fingerprint})")
    if info.warning:
        _out(f"warning: {info.warning}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from ..client import get_client
    from ..commands.keys import render_key_table

    keys = get_client().keys_overview()["keys"]
    _out(json.dumps(keys, indent=2) if args.json else render_key_table(keys))
    return 0


def cmd_keys_delete(args: argparse.Namespace) -> int:
    provider, name = _split_label(args.provider, args.name)
    from ..keys import label as key_label

    label = key_label(provider, name)
    if not _keystore().delete(provider, name):
        raise ByokError(f"no stored key {label}; `jupyter byok keys list` shows what is stored")
    _out(f"deleted {label}")
    return 0


def cmd_keys_verify(args: argparse.Namespace) -> int:
    provider, name = _split_label(args.provider, args.name)
    from ..keys import verify_key

    result = verify_key(provider, name)
    _out(result)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    result = _keystore().rotate()
    _out(f"rotated the data key and key-encryption key; {result['entries']} entries re-encrypted")
    return 0


def cmd_keys_status(args: argparse.Namespace) -> int:
    status = _keystore().status()
    if args.json:
        _out(json.dumps(status, indent=2))
        return 0
    _out(f"protection tier: {status['tier']} — {status['tier_description']}")
    _out(f"keystore:        {status['path']}{'' if status['exists'] else ' (not created yet)'}")
    if status.get("key_file"):
        _out(f"key file:        {status['key_file']}")
    if status.get("error"):
        _out(f"problem:         {status['error']}")
    else:
        providers = ", ".join(status["providers"]) or "none"
        _out(f"entries:         {status['entries']} (providers: {providers})")
    return 0


def cmd_keys_reset(args: argparse.Namespace) -> int:
    moved = _keystore().reset()
    if not moved:
        _out("nothing to reset: no keystore here")
    for path in moved:
        _out(f"set aside: {path}")
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from ..keys import Keystore

    passphrase = None
    if args.tier == "passphrase":
        passphrase = _read_secret("New keystore passphrase: ").strip()
    Keystore(passphrase=passphrase).init(args.tier)
    _out(f"created an empty keystore with the {args.tier} tier")
    return 0


# ------------------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    from ..client import get_client
    from ..commands.keys import render_status, status_report

    report = status_report(get_client())
    _out(json.dumps(report, indent=2) if args.json else render_status(report))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..commands.doctor import doctor, render_text

    report = doctor(probe=args.probe)
    _out(json.dumps(report, indent=2) if args.json else render_text(report))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from ..config import load_settings

    if args.key is None:
        _out(json.dumps(load_settings().to_json(), indent=2))
        return 0
    if args.value is None:
        _out(json.dumps(load_settings().to_json().get(args.key)))
        return 0
    from ..commands.config import set_config

    stored = set_config(args.key, args.value)
    _out(f"{args.key} = {json.dumps(stored)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(args.output)


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter byok", description="Bring your own key AI for Jupyter."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="manage provider keys and named secrets")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    p = ksub.add_parser("set", help="store a key (read from a hidden prompt or stdin)")
    p.add_argument(
        "provider", help="openai, anthropic, gemini, xai, tavily, an endpoint, or secret"
    )
    p.add_argument("--name", help="a name for several keys per provider (model ids use @NAME)")
    p.add_argument("--tier", choices=["free", "paid"], help="billing tier of the key")
    p.add_argument(
        "--base-url", help="send this key's calls to this base URL (proxy, Azure), and only there"
    )
    p.add_argument(
        "--allow-http",
        action="store_true",
        help="allow a plain-http --base-url on another machine (the key travels unencrypted)",
    )
    p.set_defaults(func=cmd_keys_set)
    p = ksub.add_parser("list", help="list stored keys (masked)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_list)
    p = ksub.add_parser("delete", help="delete a stored key")
    p.add_argument("provider")
    p.add_argument("--name")
    p.set_defaults(func=cmd_keys_delete)
    p = ksub.add_parser("verify", help="check a key against its provider")
    p.add_argument("provider")
    p.add_argument("--name")
    p.set_defaults(func=cmd_keys_verify)
    p = ksub.add_parser("rotate-master", help="rotate the data key and key-encryption key")
    p.set_defaults(func=cmd_keys_rotate)
    p = ksub.add_parser("status", help="protection tier, file locations and counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_status)
    p = ksub.add_parser("reset", help="set the keystore files aside and start fresh")
    p.set_defaults(func=cmd_keys_reset)
    p = ksub.add_parser("init", help="create an empty keystore with a chosen protection tier")
    p.add_argument("--tier", choices=["machine-file", "file", "passphrase"], default="machine-file")
    p.set_defaults(func=cmd_keys_init)

    from .endpoints import register as register_endpoints
    from .endpoints import register_rebind

    register_rebind(ksub)
    register_endpoints(sub)

    from .local import register as register_local
    from .usage import register as register_usage

    register_local(sub)
    register_usage(sub)

    from .backup import register as register_backup
    from .ledger import register as register_ledger

    register_backup(sub)
    register_ledger(sub)

    from .batches import register as register_batches

    register_batches(sub)

    p = sub.add_parser("status", help="what jupyter_byok sees on this machine (as %byok status)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("doctor", help="versions, CPU, local-model checks, keystore, ledger")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--probe", action="store_true", help="also check the embedded model now")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("config", help="show or change a setting")
    p.add_argument("key", nargs="?", help="require_server or local_extra_buffers")
    p.add_argument("value", nargs="?")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("demo", help="the offline demo on the embedded local model")
    p.add_argument("--output", default="demo-output", help="folder for the demo's results")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..redact import install_log_filter

    install_log_filter()
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler = args.func
    try:
        return func(args)
    except ByokError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file or folder this command needed: one line, no traceback
        from .._files import os_error_line

        where = exc.filename if isinstance(exc.filename, str) else "a file"
        print(f"error: {os_error_line(exc, Path(where))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
