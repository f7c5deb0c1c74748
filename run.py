"""Venueflow's operator entry point: `uv run run.py --help`.

up        Redis (embedded unless REDIS_URL is set), every flow, the dashboard
ps        every process of the running `up` (incl. the check-in deciders), with pids
demo      `up` plus simulated sensors, so a newcomer sees it live
flow      one flow, supervised (restarted with recovery if it dies)
ui        the dashboard alone (--replicas N: N of it behind HAProxy; --api-replicas M)
query     SQL against the DuckDB catalog (table, or --json; --as-of TIME for time travel)
lake      lake tables: maintain, status, history, migrate (`lake -h`)
catalog   (re)create the catalog's views
participants  import a CSV, revoke/reissue/restore, tokens, QR codes (`participants -h`)
users     dashboard users and roles: add, list, remove, passwd, role (`users -h`)
keys      API keys for devices, gates and scripts: add, list, revoke (`keys -h`)
notify    notification targets: list, test TARGET (`notify -h`)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from cli.lake import add_parser as add_lake_parser
from cli.lake import main as lake_main
from cli.textout import format_table, jsonable
from core import keys
from core.settings import Settings
from ops.balancer import BadApiCpus, BalancerMissing, dashboard_children
from ops.embedded_redis import UnreadableRedisData
from ops.processes import (
    FLOWS,
    apply_umask,
    child_env,
    embedded_redis_child,
    flow_child,
    remote_flow_child,
    secure_data_dir,
    spawn,
)
from ops.supervisor import Child, Supervisor

log = logging.getLogger("venueflow")


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )


def _redis(s: Settings, sup: Supervisor) -> str:
    """Use REDIS_URL, or start (and supervise) the embedded redis-server under DATA_DIR."""
    if s.redis_url:
        return s.redis_url
    child, url = embedded_redis_child(s.data_dir)
    sup.add(child)
    log.info("embedded Redis %s (data in %s)", url, (s.data_dir / "redis").resolve())
    return url


def _flow_child(
    s: Settings, url: str, name: str, args: argparse.Namespace, logs: Path | None
) -> Child:
    log_path = logs / f"flow-{name}.log" if logs else None
    if getattr(args, "addresses", None):  # one process of a cluster across machines
        addresses = [a.strip() for a in args.addresses.split(";") if a.strip()]
        return remote_flow_child(
            s, url, name, args.process_index, addresses, args.workers, log_path
        )
    return flow_child(s, url, name, args.workers, log_path, args.processes)


def _warn_shards(s: Settings, processes: int | None) -> None:
    """A cluster larger than its input has partitions leaves processes without input."""
    n = processes if processes is not None else s.flow_processes
    if n > 1 and s.stream_shards < n:
        log.warning(
            "flows run as %d processes but STREAM_SHARDS=%d: the events flow reads %d "
            "stream(s), so some processes get no input of their own (set STREAM_SHARDS=%d)",
            n, s.stream_shards, len(keys.event_streams(s)), n,
        )  # fmt: skip


def status_path(s: Settings) -> Path:
    """Where the supervisor of `up` / `demo` / `flow` writes its process list (`run.py ps`)."""
    return s.data_dir / "processes.json"


def prepare_lake(s: Settings) -> None:
    """Import an old-layout lake once (rows counted before and after), then make sure every
    table exists, before any flow starts."""
    from storage.lake import ensure_lake
    from storage.lake_migrate import migrate

    if s.lake.local:
        for name, (before, after) in migrate(s.lake_dir).items():
            log.info(
                "lake: imported %s from the old layout (%d rows, %d after)", name, before, after
            )
    ensure_lake(s.lake)


def _refresh_catalog(s: Settings) -> None:
    from storage.catalog import refresh_catalog

    try:
        refresh_catalog(s.catalog_path, s.lake)
    except Exception as exc:  # an analyst holding the file open must not stop the system
        log.warning(
            "catalog %s not refreshed (%s); its views stay as they were", s.catalog_path, exc
        )


DEMO_USER = "demo-organiser"


def _login_note(s: Settings, demo: bool) -> str:
    """What to log in with. `demo` with no user yet creates `demo-organiser` with a random
    password, printed here once (never a fixed default); `up` only says how to create one."""
    from auth.users import user_store

    store = user_store(s.data_dir)
    if not store.empty():
        return f"as one of the {len(store.all())} user(s) of {store.path} (run.py users list)"
    if not demo:
        return "no user yet: uv run run.py users add NAME --role organiser"
    import secrets

    password = secrets.token_urlsafe(12)
    store.add(DEMO_USER, "organiser", password)
    return (
        f"{DEMO_USER} / {password}   (demo organiser made now; shown once — "
        f"change it: run.py users passwd {DEMO_USER})"
    )


def cmd_up(args: argparse.Namespace, demo: bool = False) -> int:
    s = Settings()
    if demo and not s.api_key_set:
        os.environ["API_KEYS"] = "demo-key"
        s = Settings()
    logs = s.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(status_path(s))
    sup.install_signal_handlers()
    url = _redis(s, sup)
    prepare_lake(s)
    _refresh_catalog(s)
    camera_notes: list[str] = []
    if demo:  # a real RTSP test camera for the venue's loopback cameras, if GStreamer is here
        from sim.camera_server import demo_cameras

        # Started before the flows, so stopped after them (reverse order): a demo that stops
        # must not look like a camera failure to the video flow (a `camera.error` alarm).
        camera_children, camera_notes = demo_cameras(s, url, logs)
        for child in camera_children:
            sup.add(child)
    _warn_shards(s, args.processes)
    for name in FLOWS:
        sup.add(_flow_child(s, url, name, args, logs))
    maintain_argv = [sys.executable, "run.py", "lake", "maintain", "--every"]
    maintain_argv.append(str(s.lake_maintain_every_s))
    sup.add(
        Child(
            "lake maintenance",
            lambda: spawn(maintain_argv, child_env(s, url), logs / "lake-maintain.log"),
            logs / "lake-maintain.log",
        )
    )
    sup.add(
        Child(
            "notifier",
            lambda: spawn(
                [sys.executable, "-m", "notify.notifier"], child_env(s, url), logs / "notifier.log"
            ),
            logs / "notifier.log",
        )
    )
    api = _api_replicas(args, s)
    for child in dashboard_children(s, url, s.ui_replicas, logs, api):  # + HAProxy if > 1 / API
        sup.add(child)
    if demo:
        key = sorted(s.api_key_set)[0]
        base = f"http://{s.host}:{s.port}"
        sup.add(
            Child(
                "sensor simulator",
                lambda: spawn(
                    [
                        sys.executable,
                        "-m",
                        "sim.sensors",
                        "--rate",
                        str(args.rate),
                        "--http",
                        base,
                        "--api-key",
                        key,
                    ],
                    child_env(s, url),
                    logs / "sim.log",
                ),
                logs / "sim.log",
            )
        )
        # Gates: check-ins at --gate-rate/s (it also waits for the dashboard, then registers
        # its synthetic participants through the check-in flow before the first scan).
        gate_argv = [sys.executable, "-m", "sim.gates", "--rate", str(args.gate_rate)]
        gate_argv += ["--http", base, "--api-key", key]
        sup.add(
            Child(
                "gate simulator",
                lambda: spawn(gate_argv, child_env(s, url), logs / "gates-sim.log"),
                logs / "gates-sim.log",
            )
        )
    login_note = _login_note(s, demo)
    sup.start_all()
    print("\n".join(camera_notes), flush=True)
    print(
        f"\nVenueflow is up.\n"
        f"  Dashboard   http://{s.host}:{s.port}\n"
        f"  Health      http://{s.host}:{s.port}/health\n"
        f"  Redis       {url}{'  (embedded)' if not s.redis_url else ''}\n"
        f"  Lake        {s.lake_dir.resolve()}\n"
        f'  Catalog     {s.catalog_path.resolve()}   (uv run run.py query "select ...")\n'
        f"  Logs        {logs.resolve()}\n"
        f"  Processes   uv run run.py ps   ({_process_summary(sup)})\n"
        f"  API keys    {', '.join(sorted(s.api_key_set)) or 'none set (API_KEYS)'}\n"
        f"  Login       {login_note}\n"
        f"Ctrl-C stops everything.\n",
        flush=True,
    )
    sup.run()
    log.info("stopped")
    return 0


def _process_summary(sup: Supervisor) -> str:
    """`N processes: flow checkins (+ 2 deciders), ...` for the banner."""
    rows = sup.status()
    parts = [r for r in rows if r["started_by"] != "supervisor"]
    by_flow: dict[str, int] = {}
    for r in parts:
        by_flow[str(r["started_by"])] = by_flow.get(str(r["started_by"]), 0) + 1
    started = "; ".join(f"{n} started by {flow}" for flow, n in by_flow.items())
    return f"{len(rows)} processes" + (f", of which {started}" if started else "")


def cmd_ps(args: argparse.Namespace) -> int:
    """Print the process list the supervisor of a running `up` keeps (`status_path`)."""
    s = Settings()
    path = status_path(s)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"no process list at {path}: is `run.py up` running here?", file=sys.stderr)
        return 1
    sup_pid = doc.get("supervisor_pid")
    live = isinstance(sup_pid, int) and Path(f"/proc/{sup_pid}").exists()
    rows = []
    for p in doc.get("processes", []):
        pid = p.get("pid")
        running = live and isinstance(pid, int) and Path(f"/proc/{pid}").exists()
        since = p.get("since")
        up = f"{datetime.now(UTC).timestamp() - since:.0f}s" if running and since else ""
        rows.append(
            (
                p["name"],
                pid if running else "",
                p["state"] if live else "stopped",
                p["restarts"],
                up,
                p["started_by"],
            )
        )
    cols = ["name", "pid", "state", "restarts", "up", "started_by"]
    if args.json:
        print(json.dumps([dict(zip(cols, r, strict=True)) for r in rows]))
    else:
        print(format_table(cols, rows))
        if not live:
            print(f"(the supervisor, pid {sup_pid}, is not running: last list it wrote)")
    return 0


def cmd_flow(args: argparse.Namespace) -> int:
    s = Settings()
    sup = Supervisor(status_path(s))
    sup.install_signal_handlers()
    url = _redis(s, sup)
    if args.addresses and args.process_index is None:
        print("--addresses needs --process-index (this machine's place in the list)")
        return 2
    if args.name == "events" and not args.addresses:
        _warn_shards(s, args.processes)
    sup.add(_flow_child(s, url, args.name, args, None))
    sup.start_all()
    sup.run()
    return 0


def _api_replicas(args: argparse.Namespace, s: Settings) -> int:
    """`--api-replicas M` if given, else API_REPLICAS (ops.balancer)."""
    given = getattr(args, "api_replicas", None)
    return s.api_replicas if given is None else given


def cmd_ui(args: argparse.Namespace) -> int:
    s = Settings()
    os.environ["REDIS_URL"] = s.effective_redis_url
    replicas, api = args.replicas or s.ui_replicas, _api_replicas(args, s)
    if replicas <= 1 and api <= 0:
        from ui.main import main

        main()
        return 0
    _setup_logging()  # N replicas behind HAProxy, supervised (ops.balancer)
    sup = Supervisor()
    sup.install_signal_handlers()
    logs = s.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for child in dashboard_children(s, s.effective_redis_url, replicas, logs, api):
        sup.add(child)
    sup.start_all()
    print(
        f"Dashboard: {replicas} replicas and {api} API processes behind HAProxy on "
        f"http://{s.host}:{s.port}",
        flush=True,
    )
    sup.run()
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb

    from storage.catalog import connect_catalog, connect_memory, query
    from storage.lake import OldLayoutError
    from storage.lake_maintenance import versions_as_of

    s = Settings()
    try:
        if args.as_of is not None:
            con = connect_memory(s.lake, versions=versions_as_of(s.lake, args.as_of))
        else:
            con = connect_catalog(s.catalog_path, s.lake)
        cols, rows = query(con, args.sql)
    except (duckdb.Error, OldLayoutError) as exc:
        print(f"query failed: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{c: jsonable(v) for c, v in zip(cols, r, strict=True)} for r in rows]))
    else:
        print(format_table(cols, rows))
    return 0


def _aware_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def cmd_catalog(args: argparse.Namespace) -> int:
    from storage.catalog import refresh_catalog

    s = Settings()
    refresh_catalog(s.catalog_path, s.lake)
    print(f"catalog {s.catalog_path.resolve()} refreshed")
    return 0


def cmd_participants(args: argparse.Namespace) -> int:
    from cli.participants import main as participants_main

    return participants_main(args)


def cmd_users(args: argparse.Namespace) -> int:
    from cli.auth import cmd_users as users_main

    return users_main(args)


def cmd_keys(args: argparse.Namespace) -> int:
    from cli.auth import cmd_keys as keys_main

    return keys_main(args)


def cmd_notify(args: argparse.Namespace) -> int:
    from cli.notify import main as notify_main

    return notify_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="Redis (embedded unless REDIS_URL), all flows, the dashboard")
    up.add_argument("-w", "--workers", type=int, default=1, help="Bytewax workers per flow")
    up.add_argument(
        "--processes",
        type=int,
        default=None,
        help="processes per flow: a Bytewax cluster on loopback (default FLOW_PROCESSES, 1)",
    )
    up.add_argument(
        "--api-replicas",
        type=int,
        default=None,
        help="M API-only processes behind HAProxy for API-key requests (default API_REPLICAS, 0)",
    )
    demo = sub.add_parser("demo", help="`up` plus simulated sensors")
    demo.add_argument("-w", "--workers", type=int, default=1, help="Bytewax workers per flow")
    demo.add_argument(
        "--processes",
        type=int,
        default=None,
        help="processes per flow: a Bytewax cluster on loopback (default FLOW_PROCESSES, 1)",
    )
    demo.add_argument("--rate", type=float, default=20.0, help="simulated events per second")
    demo.add_argument(
        "--gate-rate", type=float, default=5.0, help="simulated gate check-ins per second (5)"
    )
    ps = sub.add_parser(
        "ps", help="every process of the running `up`: flows, their deciders, the rest"
    )
    ps.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    fl = sub.add_parser("flow", help="run one flow, supervised, with recovery")
    fl.add_argument("name", choices=sorted(FLOWS))
    fl.add_argument("-w", "--workers", type=int, default=1, help="Bytewax workers")
    fl.add_argument(
        "--processes",
        type=int,
        default=None,
        help="processes per flow: a Bytewax cluster on loopback (default FLOW_PROCESSES, 1)",
    )
    fl.add_argument(
        "--addresses",
        default=None,
        help='a cluster across machines: every process\'s host:port, ";"-separated, the same '
        "list on each machine (docs/operating.md)",
    )
    fl.add_argument(
        "--process-index", type=int, default=None, help="this machine's place in --addresses"
    )
    ui_p = sub.add_parser("ui", help="the dashboard alone (needs REDIS_URL or a running `up`)")
    ui_p.add_argument(
        "--replicas", type=int, default=0, help="N processes behind HAProxy (default UI_REPLICAS)"
    )
    ui_p.add_argument(
        "--api-replicas",
        type=int,
        default=None,
        help="M API-only processes behind HAProxy for API-key requests (default API_REPLICAS, 0)",
    )
    q = sub.add_parser("query", help="SQL against the catalog (views: events, event_counts, ...)")
    q.add_argument("sql")
    q.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    q.add_argument(
        "--as-of",
        type=_aware_time,
        help="read each table as it was at this time (ISO 8601, e.g. 2026-12-04T14:00:00Z)",
    )
    add_lake_parser(sub)
    sub.add_parser("catalog", help="(re)create the DuckDB catalog's views over the lake")
    from cli.participants import add_parser as add_participants_parser

    add_participants_parser(sub)
    from cli.auth import add_parsers as add_auth_parsers

    add_auth_parsers(sub)
    from cli.notify import add_parser as add_notify_parser

    add_notify_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_umask()  # before anything is created: this process and every child (DATA_UMASK)
    if args.command in {"up", "demo", "flow", "ui"}:
        secure_data_dir(Settings().data_dir)
    if args.command in {"up", "demo", "flow"}:
        _setup_logging()
    handlers = {
        "up": cmd_up,
        "ps": cmd_ps,
        "demo": lambda a: cmd_up(a, demo=True),
        "flow": cmd_flow,
        "ui": cmd_ui,
        "query": cmd_query,
        "catalog": cmd_catalog,
        "lake": lake_main,
        "participants": cmd_participants,
        "users": cmd_users,
        "keys": cmd_keys,
        "notify": cmd_notify,
    }
    try:
        return handlers[args.command](args)
    except (BalancerMissing, BadApiCpus, UnreadableRedisData) as exc:  # what the operator fixes
        print(f"run.py {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
