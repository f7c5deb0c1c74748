"""The lake and everything read from it: the tables (`storage.tables`), Delta writing
(`storage.lake`), maintenance and migration, the DuckDB catalog of views (`storage.catalog`),
EVERY query the dashboard and API run (`storage.queries`), the attendance report
(`storage.reports`), the analytics page's queries and the analysts' sandboxed free SQL
(`storage.analytics`, `storage.sql_sandbox`), and erasing a participant (`storage.erasure`).

Layering (`tests/test_imports.py`): imports `core/` only; used by every layer above.
"""
