"""`run.py notify`: the venue file's targets (URLs redacted) and `notify test TARGET`."""

from __future__ import annotations

import argparse
import asyncio

from core.settings import Settings
from core.venue import VenueError, load_venue
from notify.senders import send_test


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("notify", help="notification targets: list, send a test")
    nsub = p.add_subparsers(dest="notify_command", required=True)
    nsub.add_parser("list", help="the venue file's targets and routes (secrets never shown)")
    t = nsub.add_parser("test", help="send a test notification to TARGET and print the outcome")
    t.add_argument("target")


def main(args: argparse.Namespace) -> int:
    s = Settings()
    try:
        venue = load_venue(s.venue_config)
    except VenueError as exc:
        print(exc)
        return 2
    n = venue.notifications
    if args.notify_command == "list":
        if not n.targets:
            print("no notification targets (venue file: notifications.targets)")
        for t in n.targets:
            kind = "signed webhook" if t.is_webhook else "apprise"
            print(f"{t.name:20} {kind:15} {t.shown_url}")
        for r in n.routes:
            esc = f" → {r.escalate_to} after {r.escalate_after_min:g} min" if r.escalate_to else ""
            print(f"route {r.name}: {', '.join(r.severities)} → {', '.join(r.targets)}{esc}")
        return 0
    target = n.target(args.target)
    if target is None:
        known = ", ".join(t.name for t in n.targets) or "none"
        print(f"unknown target {args.target!r} (known: {known})")
        return 2
    d = asyncio.run(send_test(target, n.link_base))
    if d.ok:
        code = f" (HTTP {d.status_code})" if d.status_code else ""
        print(f"ok: test notification delivered to {target.name}{code} in {d.latency_ms:.0f} ms")
        return 0
    print(f"failed: {target.name}: {d.error} (after {d.latency_ms:.0f} ms)")
    return 1
