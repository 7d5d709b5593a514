"""``keys`` and ``status`` as data and text, shared by ``jupyter byok`` and ``%byok``.

The data comes from :class:`~jupyter_byok.client.Client` (in a kernel, from the Jupyter
server; in a terminal or script, in-process), so both front ends show the same facts,
rendered the same way. Never a key value: only labels, last four characters and
fingerprints.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .._format import format_cost
from .render import table

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["render_key_table", "render_overview", "render_status", "status_report"]


def render_key_table(keys: list[dict[str, Any]]) -> str:
    """The stored keys (``keys_overview()["keys"]``) as a table, then their warnings."""
    if not keys:
        return "no keys stored; add one with `jupyter byok keys set PROVIDER`"
    rows = [("KEY", "LAST 4", "FINGERPRINT", "TIER", "CREATED", "LAST VERIFIED")]
    for k in keys:
        rows.append(
            (
                str(k["label"]),
                f"…{k['last4']}" if k.get("last4") else "****",
                str(k.get("fingerprint") or ""),
                str(k.get("tier") or "-"),
                str(k.get("created") or ""),
                str(k.get("last_verified") or "never"),
            )
        )
    lines = [table(rows)]
    lines += [f"warning ({k['label']}): {k['warning']}" for k in keys if k.get("warning")]
    return "\n".join(lines)


def render_overview(overview: dict[str, Any]) -> str:
    """Per built-in provider: whether a key is configured and from where (stored keys with
    their last four characters, the environment variable), then named secrets and the
    keystore's protection tier."""
    lines = []
    for entry in overview["providers"]:
        mine = entry["stored"]
        env = entry.get("env_var")
        mark = "✅" if mine or env else "❌"
        detail = ", ".join(
            f"{k['label']} …{k.get('last4') or '****'}"
            + (f" ({k['tier']})" if k.get("tier") else "")
            for k in mine
        )
        if env:
            detail = (detail + ", " if detail else "") + f"${env}"
        lines.append(f"{mark} {entry['provider']:<10} {detail or 'not configured'}")
    lines += [f"🔑 secret     {k['name']}" for k in overview["keys"] if k.get("kind") == "secret"]
    lines.append(f"protection tier: {overview['tier']}")
    return "\n".join(lines)


def status_report(client: Client) -> dict[str, Any]:
    """What ``jupyter byok status`` and ``%byok status`` show: version, home, the default
    model, how calls are made, the keystore's tier and today's spend (or why it is
    unknown)."""
    from .._version import __version__
    from ..config import byok_home
    from ..errors import ByokError
    from ..models import default_model

    overview = client.keys_overview()
    report: dict[str, Any] = {
        "version": __version__,
        "home": str(byok_home(create=False)),
        "default_model": default_model(),
        "transport": client.transport,
        "tier": overview["tier"],
        "tier_description": overview["tier_description"],
        "keys_configured": sorted(p["provider"] for p in overview["providers"] if p["configured"]),
    }
    try:
        from ..ledger import Ledger

        report["spent_today_usd"] = str(Ledger().spend(since="today"))
    except ByokError as exc:
        report["spent_today_usd"], report["spent_error"] = None, str(exc)
    return report


def render_status(report: dict[str, Any]) -> str:
    spent = report.get("spent_today_usd")
    lines = [
        f"jupyter_byok {report['version']}",
        f"home:            {report['home']}",
        f"default model:   {report['default_model']}",
        f"protection tier: {report['tier']} — {report['tier_description']}",
        f"transport:       {report['transport']}",
        "keys for:        " + (", ".join(report["keys_configured"]) or "no provider yet"),
        "spent today:     "
        + (
            format_cost(Decimal(spent))
            if spent is not None
            else f"unknown ({report['spent_error']})"
        ),
    ]
    return "\n".join(lines)
