"""What more than one process shares, and nothing else: settings (`core.settings`, where the
lake is: `core.lake_location`), Redis keys and channels (`core.keys`), the records on the bus
(`core.records`, `core.alarms`), the venue file (`core.venue`, `core.notify_config`), tickets
(`core.tokens`, `core.qr`, `core.qr_export`), participant imports and admin operations
(`core.participants`, `core.participant_admin`), notification planning (`core.notify_plan`),
CSV safety (`core.csv_safe`) and clean shutdown (`core.shutdown`).

The bottom layer: `core/` imports nothing of the project but itself (`tests/test_imports.py`).
"""
