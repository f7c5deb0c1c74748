"""Where the lake lives (`LAKE_URI` or `DATA_DIR/lake`): the one piece of the lake every
process needs to know, so `core.settings` can hand it out without importing `storage/`
(`storage.lake` reads and writes the tables there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A table's folder name (the names themselves are `storage.tables.TABLES`).
_TABLE_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Lake:
    """Where the lake lives: `uri` is a local absolute path or `s3://bucket/prefix`;
    `storage_options` are delta-rs's object-store options (endpoint, keys, region);
    `state_dir` is the local folder where the writers' first-run markers were kept before
    they moved into the tables' logs (`storage.lake.first_run_app`); still read."""

    uri: str
    state_dir: Path
    storage_options: Mapping[str, str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return "://" not in self.uri

    def table_uri(self, table: str) -> str:
        if not _TABLE_NAME.fullmatch(table):
            raise KeyError(f"no lake table {table!r}")
        return f"{self.uri.rstrip('/')}/{table}"

    def options(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None


def as_lake(lake: Lake | Path) -> Lake:
    """A `Lake` for a local lake folder (what most callers and tests pass)."""
    if isinstance(lake, Lake):
        return lake
    d = Path(lake).resolve()
    return Lake(str(d), d / "_writers")


def lake_from_settings(s: Any) -> Lake:
    """The lake of a `Settings`: `LAKE_URI` (s3://...) with its S3 settings, else
    `DATA_DIR/lake`."""
    if not s.lake_uri:
        return as_lake(s.lake_dir)
    opts = {
        "AWS_ENDPOINT_URL": s.lake_s3_endpoint,
        "AWS_REGION": s.lake_s3_region,
        "AWS_ACCESS_KEY_ID": s.lake_s3_access_key_id,
        "AWS_SECRET_ACCESS_KEY": s.lake_s3_secret_access_key,
        "AWS_ALLOW_HTTP": "true" if (s.lake_s3_endpoint or "").startswith("http://") else "",
    }
    return Lake(
        s.lake_uri.rstrip("/"),
        s.data_dir.resolve() / "lake_writers",
        {k: v for k, v in opts.items() if v},
    )
