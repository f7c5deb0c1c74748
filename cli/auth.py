"""`run.py users …` and `run.py keys …`: people and API keys, from the server's shell.

They write `DATA_DIR/users.json` / `DATA_DIR/api_keys.json` directly (no running server or
Redis needed); a running dashboard sees the change at its next request. Passwords are asked
twice without echo (getpass), or read from the first line of stdin with `--password-stdin`
(scripts). There is no default password anywhere.

Exit codes: 0 done; 1 refused (the message says why: exists, unknown, last organiser, ...).
"""

from __future__ import annotations

import argparse
import getpass
import sys

from core.settings import Settings

KEY_KINDS = ("device", "gate", "admin")  # auth.keys.KEY_KINDS, without importing it here
ROLES = ("organiser", "operator", "analyst")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        _err("error: the two passwords differ; nothing changed")
        return None
    return first


def cmd_users(args: argparse.Namespace) -> int:
    from auth.users import UserError, user_store

    s = Settings()
    store = user_store(s.data_dir)
    try:
        if args.users_command == "list":
            recs = store.all()
            if not recs:
                print(
                    "no users yet (add the first organiser: run.py users add NAME --role organiser)"
                )
            for u in recs:
                print(f"{u.username:<24} {u.role:<10} created {u.created_at:%Y-%m-%d %H:%M} UTC")
            return 0
        if args.users_command == "add":
            if store.get(args.name) is not None:
                raise UserError(f"user {args.name.lower()!r} exists already")
            pw = read_password(args)
            if pw is None:
                return 1
            user = store.add(args.name, args.role, pw)
            print(f"added {user.username} ({user.role}) to {store.path}")
            return 0
        if args.users_command == "passwd":
            if store.get(args.name) is None:
                raise UserError(f"no user {args.name!r}")
            pw = read_password(args)
            if pw is None:
                return 1
            store.set_password(args.name, pw)
            print(f"password of {args.name.lower()} changed; their sessions have ended")
            return 0
        if args.users_command == "role":
            user = store.set_role(args.name, args.role)
            print(f"{user.username} is now {user.role}")
            return 0
        if args.users_command == "remove":
            store.remove(args.name)
            print(f"removed {args.name.lower()}")
            return 0
    except UserError as exc:
        _err(f"error: {exc}")
        return 1
    raise AssertionError(args.users_command)


def cmd_keys(args: argparse.Namespace) -> int:
    from auth.keys import ApiKeyError, key_store

    s = Settings()
    store = key_store(s.data_dir)
    try:
        if args.keys_command == "list":
            recs = store.all()
            if s.api_key_set:
                print(f"{len(s.api_key_set)} key(s) in API_KEYS (every kind; not listed)")
            if not recs:
                print("no managed keys (run.py keys add NAME --kind device|gate|admin)")
            for k in recs:
                state = (
                    f"revoked {k.revoked_at:%Y-%m-%d %H:%M} by {k.revoked_by}"
                    if k.revoked_at
                    else "active"
                )
                gate = f" gate={k.gate_id}" if k.gate_id else ""
                print(
                    f"{k.key_id}  {k.kind:<6} {k.name!r}{gate}  by {k.created_by} "
                    f"{k.created_at:%Y-%m-%d %H:%M}  {state}"
                )
            return 0
        if args.keys_command == "add":
            key, rec = store.create(args.name, args.kind, "cli", args.gate)
            print(key)  # alone on stdout, so a script can capture it
            _err(
                f"created {rec.kind} key {rec.key_id} ({rec.name!r}"
                f"{', gate ' + rec.gate_id if rec.gate_id else ''}); it is shown only this once"
            )
            return 0
        if args.keys_command == "revoke":
            rec = store.revoke(args.key_id, "cli")
            print(f"revoked {rec.key_id} ({rec.kind}, {rec.name!r})")
            return 0
    except ApiKeyError as exc:
        _err(f"error: {exc}")
        return 1
    raise AssertionError(args.keys_command)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("users", help="dashboard users: add, list, remove, passwd, role")
    us = u.add_subparsers(dest="users_command", required=True)
    us.add_parser("list", help="every user and role")
    add = us.add_parser("add", help="a new user (password asked twice, or --password-stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    pw = us.add_parser("passwd", help="set a user's password (ends their sessions)")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    role = us.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    rm = us.add_parser("remove", help="remove a user (not the last organiser)")
    rm.add_argument("name")

    k = sub.add_parser("keys", help="API keys for devices, gates and scripts: add, list, revoke")
    ks = k.add_subparsers(dest="keys_command", required=True)
    ks.add_parser("list", help="managed keys (never the keys themselves)")
    ka = ks.add_parser("add", help="a new key, printed once on stdout")
    ka.add_argument("name", help="who or what uses it, e.g. 'gas sensors hall A'")
    ka.add_argument("--kind", required=True, choices=KEY_KINDS)
    ka.add_argument("--gate", help="gate keys: the only gate id this key may check in at")
    kr = ks.add_parser("revoke", help="revoke a key by its id (see `keys list`)")
    kr.add_argument("key_id")
