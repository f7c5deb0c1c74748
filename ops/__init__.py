"""Starting and supervising processes, the same way everywhere (run.py, tests, benchmarks):
`ops.processes` (the flows' command lines, child environment, umask, `ChildStage` for a flow's
helper process), `ops.supervisor` (restart with backoff) and `ops.embedded_redis` (the
redis-server run when `REDIS_URL` is unset).

Not in `core/`: only the processes that start other processes need it. Layering
(`tests/test_imports.py`): imported by `run.py`, `cli/`, `sim/`, `flows/` (a flow starts its
stages), `api/` (/health names the flows) and `ui/`; imports `core/` only.
"""
