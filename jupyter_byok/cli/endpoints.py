"""``jupyter byok endpoints add|list|remove`` and ``jupyter byok keys rebind``.

An endpoint is a provider of the user's own (a proxy, Ollama, a corporate gateway): a
name, a base URL, a wire format and the stored key its calls use. Keys are bound to the
origin (scheme, host, port) they were stored for, so changing an endpoint's URL does not
carry its keys along: they are entered again, or moved with ``keys rebind``, which only a
person at a terminal can run (it asks for a confirmation on the terminal).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ByokError, ConfigError
from .render import out as _out
from .render import print_table

__all__ = ["cmd_keys_rebind", "register", "register_rebind"]


def _origin(url: str) -> str:
    from ..origin import origin_of

    return str(origin_of(url))


# ---------------------------------------------------------------------- endpoints
def cmd_endpoints_add(args: argparse.Namespace) -> int:
    from ..config import Endpoint, Settings, update_settings
    from ..providers import parse_endpoint

    value: dict[str, Any] = {
        "base_url": args.base_url,
        "wire": args.wire,
        "needs_key": bool(args.needs_key or args.key_name),
        "key_name": args.key_name or "default",
        "allow_http": bool(args.allow_http),
    }
    before: dict[str, Endpoint] = {}

    def change(settings: Settings) -> None:
        before.update(settings.endpoints)
        endpoint = parse_endpoint(args.name, value, settings.endpoints)
        settings.endpoints[args.name] = endpoint

    settings = update_settings(change)
    endpoint = settings.endpoints[args.name]
    old = before.get(args.name)
    verb = "added" if old is None else "updated"
    _out(f"{verb} endpoint {args.name} -> {endpoint.base_url} ({endpoint.wire} wire)")
    if old is not None and _origin(old.base_url) != _origin(endpoint.base_url):
        _out(
            f"note: keys stored for {args.name} stay bound to {_origin(old.base_url)}; enter "
            f"them again with `jupyter byok keys set {args.name}`, or move them with "
            f"`jupyter byok keys rebind {args.name}`"
        )
    elif endpoint.needs_key:
        name = "" if endpoint.key_name == "default" else f" --name {endpoint.key_name}"
        _out(f"store its key with `jupyter byok keys set {args.name}{name}`")
    return 0


def cmd_endpoints_list(args: argparse.Namespace) -> int:
    from ..config import load_settings

    endpoints = load_settings().endpoints
    if args.json:
        data = {name: vars(e) for name, e in sorted(endpoints.items())}
        _out(json.dumps(data, indent=2))
        return 0
    if not endpoints:
        _out("no endpoints; add one with `jupyter byok endpoints add NAME BASE_URL`")
        return 0
    rows = [("NAME", "BASE URL", "WIRE", "KEY")]
    for name, e in sorted(endpoints.items()):
        key = (e.key_name if e.key_name != "default" else "default") if e.needs_key else "none"
        rows.append((name, e.base_url, e.wire, key))
    print_table(rows)
    return 0


def cmd_endpoints_remove(args: argparse.Namespace) -> int:
    from ..config import Settings, update_settings

    def change(settings: Settings) -> None:
        if args.name not in settings.endpoints:
            raise ConfigError(
                f"no endpoint {args.name!r}; `jupyter byok endpoints list` shows them"
            )
        del settings.endpoints[args.name]

    update_settings(change)
    _out(
        f"removed endpoint {args.name} (its stored keys are kept: "
        f"`jupyter byok keys delete {args.name}` removes them)"
    )
    return 0


def register(sub: Any) -> None:
    from ..config import ENDPOINT_WIRES

    endpoints = sub.add_parser("endpoints", help="providers of your own: proxies, Ollama, ...")
    esub = endpoints.add_subparsers(dest="endpoints_command", required=True)
    p = esub.add_parser("add", help="add or change an endpoint")
    p.add_argument("name", help="the provider name in model ids (NAME:MODEL)")
    p.add_argument("base_url", help="e.g. https://llm.example.com/v1 or http://127.0.0.1:11434/v1")
    p.add_argument("--wire", default="openai", help=f"its API format: {', '.join(ENDPOINT_WIRES)}")
    p.add_argument("--key-name", help="the stored key its calls use (implies --needs-key)")
    p.add_argument("--needs-key", action="store_true", help="calls fail without a stored key")
    p.add_argument(
        "--allow-http",
        action="store_true",
        help="allow plain http to another machine (keys travel unencrypted)",
    )
    p.set_defaults(func=cmd_endpoints_add)
    p = esub.add_parser("list", help="list endpoints")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_endpoints_list)
    p = esub.add_parser("remove", help="remove an endpoint (its stored keys are kept)")
    p.add_argument("name")
    p.set_defaults(func=cmd_endpoints_remove)


# -------------------------------------------------------------------------- rebind
def cmd_keys_rebind(args: argparse.Namespace) -> int:
    from ..keys import Keystore, binding_for
    from ..providers import get_spec

    provider, _, at_name = args.provider.partition("@")
    name = args.name or at_name or "default"
    from ..keys import label as key_label

    label = key_label(provider, name)
    if not sys.stdin.isatty():
        raise ByokError("`jupyter byok keys rebind` asks for a confirmation: run it in a terminal")
    store = Keystore()
    info = next((i for i in store.list() if i.provider == provider and i.name == name), None)
    if info is None:
        raise ByokError(f"no stored key {label}; `jupyter byok keys list` shows what is stored")
    if info.kind != "provider":
        raise ByokError("named secrets are never sent anywhere: there is nothing to rebind")
    spec = get_spec(provider)
    target = binding_for(provider, args.base_url, args.allow_http) or spec.resolved_base_url()
    current = info.base_url or (spec.resolved_base_url() if spec.builtin else None)
    was = _origin(current) if current else "no origin (stored before keys were bound)"
    if current and current.rstrip("/") == target.rstrip("/"):
        _out(f"{label} is already bound to {target}: nothing to change")
        return 0
    ending = f" (…{info.last4})" if info.last4 else ""
    sys.stdout.write(
        f"The key {label}{ending} is bound to {was}.\n"
        f"Send it to {_origin(target)} ({target}) from now on? Type yes to confirm: "
    )
    sys.stdout.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer != "yes":
        raise ByokError(f"not confirmed: {label} stays bound to {was}")
    new = store.rebind(provider, name, args.base_url, allow_http=args.allow_http)
    _out(f"rebound {new.label} to {_origin(target)}")
    return 0


def register_rebind(ksub: Any) -> None:
    p = ksub.add_parser(
        "rebind", help="bind a stored key to a new origin (asks for confirmation; terminal only)"
    )
    p.add_argument("provider", help="a provider or endpoint (PROVIDER or PROVIDER@NAME)")
    p.add_argument("--name", help="the key's name (default: default)")
    p.add_argument(
        "--base-url",
        help="the new base URL (default: the provider's own, or the endpoint's current URL)",
    )
    p.add_argument("--allow-http", action="store_true", help="allow plain http to another machine")
    p.set_defaults(func=cmd_keys_rebind)
