"""The dashboard as N replicas behind HAProxy (`UI_REPLICAS`, `run.py ui --replicas N`), and
M API-only processes beside them (`API_REPLICAS`, `--api-replicas M`).

```
browser ── HOST:PORT  haproxy (DATA_DIR/balancer/haproxy.cfg, written here at each start)
              ├─ dashboard 0   python -m ui.main on 127.0.0.1:<free port>
              ├─ dashboard 1   …
              └─ api 0 …       python -m api.main: requests with X-API-Key under /api/, /logs
```

The API processes (`api.main`) exist because API requests on a dashboard's event loop wait
behind the re-rendering of its users' pages (`python -m bench.users`: API p99 9-16 s at 200
users). They get the requests that carry an API key under `API_PATHS` (not the session's
routes); browsers' calls with their session cookie stay on the sticky dashboards, where the
session is read. Round robin, no cookie; a request whose connection to a dead API process fails,
or that gets no answer at all, is sent to another (`retry-on conn-failure empty-response`,
`option redispatch 1`: `tests/test_replicas.py`, kill -9 of one of two under a keep-alive
client: 30 of 30 requests answered 202). A retry needs the whole request in HAProxy's buffer
(`option http-buffer-request`): without it, on a loaded machine (load 7-19) the body sometimes
reached HAProxy after it had forwarded the headers to the process being killed, the request
could not be replayed, and the client's connection was closed without an answer (3 of 4 runs of
that test failed; with it 8 of 8 passed, the retried POSTs logged as redispatched `+1` with `log
stderr` + `option httplog` turned on for the experiment). A new connection to the API process
for each request (`option http-server-close`; loopback, ~0.1 ms): when HAProxy reused an idle
connection to a process just killed (it had not yet seen it close, load 20), it closed the
client's connection without an answer, as it does for a reused connection, and the client's POST
failed; a fresh connection to a dead process is refused and retried. Every response names its
server in `X-Served-By` (`api/api0`, `replicas/dashboard1`).

Why HAProxy (Debian's `haproxy`) and not nginx: sticky sessions by an inserted cookie and
active health checks are in the free HAProxy; nginx has neither (its `ip_hash` sticks by
address, which puts every user behind one NAT on one replica, and it only notices a dead
replica when a request to it fails). NiceGUI needs stickiness: a page's state lives in the
process that rendered it, and its socket.io connection (WebSocket, or the long-polling
fallback: a series of HTTP requests) must reach that process. The cookie `VF_REPLICA`
carries the replica on every request of the browser, the socket's included.

When a replica dies, a request sent to it is refused at once and retried on another replica
(`retries`, `option redispatch`), and HAProxy's check (GET /health every second; 200 or 503
both mean "the process answers": 503 only says a flow is down) marks it down after three
failures (~3 s); requests carrying its cookie then go to another replica directly. A check
may take 5 s: a replica busy with many users answers late, and taking it out would only pile
its users onto the others (`python -m bench.users --users 200`: with 1 s, busy replicas were
taken out and HAProxy answered 503 to 11% of the check-ins). The page's socket reconnects
there, NiceGUI finds no such page and reloads it, and the session is still valid because it
is in Redis (`auth.sessions`). The supervisor restarts the dead replica on its port; HAProxy
takes it back after two good checks. `option forwardfor` passes the browser's address on
(uvicorn trusts X-Forwarded-For from 127.0.0.1), so the login throttle and the activity log
see the browser, not the balancer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings
from ops.embedded_redis import free_port
from ops.processes import child_env, spawn
from ops.supervisor import Child

#: The cookie HAProxy adds to pin a browser to a replica (its value: the replica's name).
STICKY_COOKIE = "VF_REPLICA"
HAPROXY_APT = "apt-get install -y haproxy"


class BalancerMissing(RuntimeError):
    """HAProxy is not installed."""


class BadApiCpus(RuntimeError):
    """`API_CPUS` names a CPU this process may not use, or all of them."""


def haproxy_binary() -> str:
    path = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if path is None:
        raise BalancerMissing(
            f"UI_REPLICAS > 1 needs HAProxy, which is not installed: {HAPROXY_APT}"
        )
    return path


#: Requests HAProxy sends to the API processes (`API_REPLICAS`): under these paths and with an
#: `X-API-Key` header. Browsers' calls (session cookie, no key) stay on their sticky dashboard:
#: NiceGUI's session lives there, and `api.main` has none (such a call would get 401 there).
API_PATHS = ("/api/", "/logs")
#: ... except the session's own routes (`api.registry.SESSION_ROUTERS`), which only the
#: dashboards serve.
SESSION_PATHS = "/api/auth/"
#: The response header naming the backend and server that answered (`api/api0`,
#: `replicas/dashboard1`), for operators and `tests/test_replicas.py`.
SERVED_BY = "X-Served-By"
#: Requests HAProxy lets each API process hold at once; the rest wait in HAProxy's queue (up
#: to `timeout queue`, then 503). Without a limit, at 1,000 dashboard users and 1,000
#: check-ins/s asked (`bench.users`, load 23-30) about 2,000 requests were in flight in the one
#: API process, its `/health` check waited behind them past three 5 s timeouts, HAProxy took
#: the process out of rotation and most check-ins got 503. Health checks do not count against
#: the limit, so they are answered after at most this many requests.
API_MAXCONN = 64

#: One line per request in `DATA_DIR/logs/balancer.log` with `BALANCER_ACCESS_LOG` on:
#: HAProxy's `option httplog` fields without the captured cookies and with the path only, never
#: the query string (a query may carry what must not reach a log):
#: `client:port [accept date] frontend backend/server TR/Tw/Tc/Tr/Ta status bytes
#: termination-state conns sq/bq method path`. Times in ms (`Tw` in HAProxy's queue, `Ta` from
#: the request's first byte to the answer's last: what the balancer's clients waited; -1 when
#: a phase never happened). A WebSocket's line is written when it closes.
ACCESS_LOG_FORMAT = (
    "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %HM %HPO"
)


@dataclass(frozen=True, slots=True)
class AccessLine:
    """One request of the balancer's access log (`ACCESS_LOG_FORMAT`)."""

    backend: str
    server: str
    status: int
    wait_ms: int  # Tw: in HAProxy's queue
    total_ms: int  # Ta: first byte of the request to last byte of the answer
    method: str
    path: str


def access_lines(text: str) -> list[AccessLine]:
    """The requests in `text` (a piece of balancer.log); other lines (HAProxy's own messages,
    a line cut by the piece's edges) are skipped."""
    out = []
    for line in text.splitlines():
        w = line.split()
        if len(w) != 12 or not w[1].startswith("[") or "/" not in w[3] or w[4].count("/") != 4:
            continue
        backend, _, server = w[3].partition("/")
        times = w[4].split("/")
        try:
            out.append(
                AccessLine(backend, server, int(w[5]), int(times[1]), int(times[4]), w[10], w[11])
            )
        except ValueError:
            continue
    return out


def haproxy_config(
    host: str,
    port: int,
    replicas: list[int],
    api: list[int] = (),
    maxconn: int = 8000,
    access_log: bool = False,
) -> str:
    """The balancer's configuration: `host:port` in front, one server per dashboard port, and
    a second backend `api` with one server per API process port (none: no such backend);
    `access_log`: a line per request on stderr (`ACCESS_LOG_FORMAT`)."""
    servers = "\n".join(
        f"    server dashboard{i} 127.0.0.1:{p} cookie d{i}" for i, p in enumerate(replicas)
    )
    api_servers = "\n".join(f"    server api{i} 127.0.0.1:{p}" for i, p in enumerate(api))
    route = api_backend = ""
    if api:
        route = f"""    acl api_path path_beg {API_PATHS[0]}
    acl api_path path {API_PATHS[1]}
    acl api_key req.hdr(x-api-key) -m found
    acl session_path path_beg {SESSION_PATHS}
    use_backend api if api_path api_key !session_path
"""
        api_backend = f"""
backend api
    balance roundrobin
    option redispatch 1
    retry-on conn-failure empty-response
    option http-buffer-request
    option http-server-close
    http-response set-header {SERVED_BY} %[be_name]/%[srv_name]
    option httpchk GET /health
    http-check expect rstatus ^(200|503)$
    timeout check 5s
    default-server check inter 1s fall 3 rise 2 maxconn {API_MAXCONN}
{api_servers}
"""
    log_global = log_defaults = ""
    if access_log:
        log_global = "    log stderr format raw local0\n"
        log_defaults = f'    log global\n    log-format "{ACCESS_LOG_FORMAT}"\n'
    return f"""# Written by ops/balancer.py at each start; edits are lost.
global
    maxconn {maxconn}
{log_global}
defaults
    mode http
{log_defaults}    option forwardfor
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-keep-alive 10s
    timeout queue 10s

frontend dashboard
    bind {host}:{port}
{route}    default_backend replicas

backend replicas
    balance roundrobin
    cookie {STICKY_COOKIE} insert indirect nocache httponly
    http-response set-header {SERVED_BY} %[be_name]/%[srv_name]
    option httpchk GET /health
    http-check expect rstatus ^(200|503)$
    timeout check 5s
    default-server check inter 1s fall 3 rise 2
{servers}
{api_backend}"""


def write_config(s: Settings, replicas: list[int], api: list[int] = ()) -> Path:
    """Write and check (`haproxy -c`) the configuration under DATA_DIR/balancer."""
    path = s.data_dir / "balancer" / "haproxy.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        haproxy_config(s.host, s.port, replicas, list(api), access_log=s.balancer_access_log)
    )
    check = subprocess.run(
        [haproxy_binary(), "-c", "-q", "-f", str(path)], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise RuntimeError(f"{path} is not valid:\n{check.stdout}{check.stderr}")
    return path


def dashboard_nice(s: Settings, api: int) -> int:
    """The niceness added to each dashboard replica: `DASHBOARD_NICE` when API processes
    serve the API (`api` > 0), else 0 (the dashboards then answer the API themselves, and a
    lower priority would slow it too)."""
    return s.dashboard_nice if api > 0 else 0


def cpu_split(s: Settings, api: int) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """(CPUs of the API processes, CPUs of the dashboards and HAProxy): `API_CPUS` and the
    rest of the CPUs this process may use, when API processes serve the API; (None, None)
    otherwise. HAProxy goes with the dashboards: at 1,000 users most of its work is their
    sockets (28 % of a core against 17 % for 1,000 check-ins/s alone); left unpinned, the
    scheduler moved it onto the API's core (the other being full), and HAProxy's own log had
    API requests waiting up to 2.6 s in its queue for the API process (`bench.users --users
    1000 --checkin-rate 1000 ... --load-cpus 1`, docs/operating.md, API replicas). At its
    normal priority it gets the dashboards' core before the niced dashboards.
    Refused (BadApiCpus, with the CPUs there are) when `API_CPUS` names a CPU this machine
    does not give us or leaves none for the dashboards."""
    if api <= 0 or not s.api_cpus:
        return None, None
    kept = s.api_cpu_set
    usable = frozenset(os.sched_getaffinity(0))
    if not kept or not kept <= usable or not usable - kept:
        raise BadApiCpus(
            f"API_CPUS={s.api_cpus} must name some, not all, of the CPUs this process may use "
            f"({','.join(map(str, sorted(usable)))})"
        )
    return kept, usable - kept


def dashboard_children(
    s: Settings, redis_url: str, replicas: int, logs: Path | None = None, api: int = 0
) -> list[Child]:
    """The dashboard as supervised children: itself alone on HOST:PORT (`replicas` 1, `api`
    0), or `replicas` of it and `api` API processes (`python -m api.main`) on free loopback
    ports and HAProxy on HOST:PORT (started last, so it is stopped first)."""

    def child(
        module: str,
        name: str,
        log: Path | None,
        nice: int = 0,
        cpus: frozenset[int] | None = None,
        **env: str,
    ) -> Child:
        argv = [sys.executable, "-m", module]
        return Child(
            name, lambda: spawn(argv, child_env(s, redis_url, **env), log, nice, cpus), log
        )

    if replicas <= 1 and api <= 0:
        return [child("ui.main", "dashboard", logs / "ui.log" if logs else None)]
    api_cpus, dashboard_cpus = cpu_split(s, api)
    haproxy = haproxy_binary()
    ports = [free_port() for _ in range(replicas)]
    api_ports = [free_port() for _ in range(api)]
    config = write_config(s, ports, api_ports)
    children = [
        child("ui.main", f"dashboard {i}", logs / f"ui-{i}.log" if logs else None,
              dashboard_nice(s, api), dashboard_cpus, HOST="127.0.0.1", PORT=str(p))
        for i, p in enumerate(ports)
    ] + [
        child("api.main", f"api {i}", logs / f"api-{i}.log" if logs else None,
              0, api_cpus, HOST="127.0.0.1", PORT=str(p))
        for i, p in enumerate(api_ports)
    ]  # fmt: skip
    log = logs / "balancer.log" if logs else None
    argv_lb = [haproxy, "-db", "-f", str(config)]
    children.append(
        Child(
            "balancer",
            lambda: spawn(argv_lb, child_env(s, redis_url), log, 0, dashboard_cpus),
            log,
        )
    )
    return children
