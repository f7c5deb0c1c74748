"""Settings shared by every Venueflow process.

Read from the environment or a `.env` file (pydantic-settings), so that `run.py` can hand the
same configuration to each child process simply by passing its environment on.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.lake_location import Lake, lake_from_settings

#: The product's name (page titles, the HTTP API's description).
APP_NAME = "Venueflow"

#: What `REDIS_NAMESPACE` may be: empty, or one segment of letters, digits, `_`, `.`, `-` (no
#: `:`, and none of the glob characters `* ? [ ]` that would make a PSUBSCRIBE pattern reach
#: into other deployments).
REDIS_NAMESPACE_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9_.\-]{0,63})?$"


def embedded_url_file(data_dir: Path) -> Path:
    """Where `ops.embedded_redis` writes the URL of the server it started for DATA_DIR."""
    return data_dir / "redis" / "url"


def embedded_url(data_dir: Path) -> str:
    """The URL of the embedded server started by `start_embedded_redis` for this DATA_DIR."""
    f = embedded_url_file(data_dir)
    if not f.exists():
        raise RuntimeError(
            "REDIS_URL is unset and no embedded Redis runs for this DATA_DIR; start one with "
            "`uv run run.py up` (or set REDIS_URL)."
        )
    return f.read_text().strip()


class Settings(BaseSettings):
    """The public settings of the design card, plus a few tuning knobs with safe defaults."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis to use. Unset: run.py starts an embedded redis-server under DATA_DIR.",
    )
    redis_namespace: str = Field(
        default="",
        pattern=REDIS_NAMESPACE_PATTERN,
        description="Puts every Redis key and channel of this deployment under "
        "`<namespace>:`, so that deployments can share one Redis server (empty: none).",
    )
    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: str = Field(default="", description="Comma-separated device/gate keys (X-API-Key).")
    venue_config: Path | None = None
    storage_secret: str | None = Field(
        default=None,
        description="Signs dashboard sessions. Unset: a random one is kept in DATA_DIR/ui.",
    )

    # Tuning, documented in docs/operating.md.
    event_streams: str = Field(
        default="events:in",
        description="Comma-separated stream keys the events flow reads (shard by adding keys).",
    )
    allowed_lateness_s: float = Field(
        default=10.0, description="How long a window waits for out-of-order events (event time)."
    )
    window_s: int = Field(default=60, description="Length of the event-count windows.")
    snapshot_interval_s: int = Field(default=2, description="Bytewax snapshot/epoch interval.")
    lake_uri: str = Field(
        default="",
        description="Where the lake's Delta tables live: empty for DATA_DIR/lake, or "
        "s3://bucket/prefix for S3-compatible object storage.",
    )
    lake_s3_endpoint: str = Field(
        default="", description="S3 endpoint URL for LAKE_URI (empty: AWS's own)."
    )
    lake_s3_region: str = Field(default="us-east-1", description="S3 region for LAKE_URI.")
    lake_s3_access_key_id: str = Field(default="", description="S3 access key for LAKE_URI.")
    lake_s3_secret_access_key: str = Field(default="", description="S3 secret for LAKE_URI.")
    lake_maintain_every_s: float = Field(
        default=300.0,
        description="How often `run.py up` compacts, checkpoints and vacuums the lake tables.",
    )
    lake_vacuum_retention_h: int = Field(
        default=24,
        ge=0,
        description="Files a compaction replaced are deleted after this many hours: longer than "
        "any query runs (>= 1), and as far back as `query --as-of` can go.",
    )
    stream_retention_s: float = Field(
        default=3600.0,
        description="Input stream entries are trimmed once a snapshot this old has passed them "
        "(0: never trim).",
    )
    max_event_bytes: int = Field(default=64 * 1024, description="Larger events are dead-lettered.")
    lake_flush_rows: int = Field(
        default=50_000, description="Rows buffered per lake table before a file is written."
    )
    lake_flush_age_s: float = Field(
        default=5.0, description="Buffered rows older than this are written at the next snapshot."
    )
    video_open_timeout_s: float = Field(
        default=5.0, description="RTSP open timeout (a camera that accepts but never answers)."
    )
    video_read_timeout_s: float = Field(default=5.0, description="FFmpeg's own read timeout.")
    video_stall_s: float = Field(
        default=3.0,
        description="A streaming camera that sends no frame for this long is dropped and "
        "reopened (a frozen camera never recovers otherwise).",
    )
    video_backoff_max_s: float = Field(
        default=2.0, description="Longest wait between reconnect attempts (they never stop)."
    )
    video_error_after: int = Field(
        default=3, description="Failed connection attempts in a row before a camera is `error`."
    )
    video_stats_window_s: int = Field(
        default=60, description="Length of the per-camera statistics windows (camera_stats)."
    )
    video_ffmpeg_options: str = Field(
        default="rtsp_transport;tcp|analyzeduration;500000|probesize;500000",
        description="OPENCV_FFMPEG_CAPTURE_OPTIONS for cameras (TCP; short probing: the "
        "default probes 5 s before the first frame).",
    )
    checkin_allowed_lateness_s: float = Field(
        default=120.0,
        description="How long an attendance minute waits for offline gates' uploads before it "
        "is closed (later scans still count, as a late correction).",
    )
    max_checkin_bytes: int = Field(default=4096, description="Larger check-ins are refused.")
    checkin_deciders: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Decider processes of the check-in flow, each owning a share of the "
        "participants. Fixed once the flow has run (its state is cut in this many shares).",
    )
    checkin_state_cache_scans: int = Field(
        default=100_000,
        ge=1,
        description="Participant states each check-in decider keeps in memory, weighed in "
        "scans (1 + kept scans + remembered refusals per state; 0.6-0.9 KB each, so 60-90 MiB "
        "per decider by default): the least recently used beyond it stay in Redis only and are "
        "read back when scanned again. The default holds one decider's share of "
        "bench.checkins' 200,000 scans of 50,000 participants with 97 % hits.",
    )
    stream_shards: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Shards of each input stream (`events:in`, `checkins:in`, "
        "`participants:in`): 1 = the plain names; N = `<name>:{0}` … `<name>:{N-1}`, each a "
        "resumable partition of its flow (docs/contract.md says which hash picks the shard).",
    )
    flow_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes each flow runs as (a Bytewax cluster when > 1; `run.py up "
        "--processes N` overrides it).",
    )
    ui_replicas: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Dashboard processes: more than 1 runs them on loopback ports behind "
        "HAProxy on HOST:PORT, sticky by cookie (`run.py ui --replicas N` overrides it).",
    )
    api_replicas: int = Field(
        default=0,
        ge=0,
        le=32,
        description="API-only processes (`python -m api.main`) behind the same HAProxy, taking "
        "the API-key requests under /api/ and /logs; 0: the dashboards serve the API "
        "(`run.py ui/up --api-replicas M` overrides it).",
    )
    dashboard_nice: int = Field(
        default=5,
        ge=0,
        le=19,
        description="Niceness added to the dashboard processes when API processes serve the "
        "API (`API_REPLICAS` > 0): under saturation a gate's verdict and an API answer get the "
        "CPU before page re-rendering (docs/operating.md, Replicas; 0 = same priority).",
    )
    api_cpus: str = Field(
        default="",
        pattern=r"^(\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*)?$",
        description="CPUs kept for the API processes when there are any (`API_REPLICAS` > 0), "
        "as Linux lists them (`0`, `0,2`, `0-1`): the API processes run on these only, the "
        "dashboards and HAProxy (which carries the pages' sockets) on the others, so pages "
        "never take a gate's CPU (docs/operating.md, API replicas). Empty: no pinning.",
    )
    balancer_access_log: bool = Field(
        default=False,
        description="With HAProxy in front (`UI_REPLICAS` > 1 or `API_REPLICAS` > 0): a line "
        "per request in DATA_DIR/logs/balancer.log with the backend and process that answered, "
        "the status and the times in HAProxy's queue and in all (path only, never the query "
        "string; docs/operating.md, Replicas).",
    )
    live_page_updates_per_s: float = Field(
        default=1000.0,
        gt=0,
        le=1_000_000,
        description="Most page refreshes one live model (events, attendance, alarms, video) "
        "makes a second in one dashboard process: with more open pages than this / 4, each "
        "page is refreshed less often than 4 times a second (docs/operating.md, Replicas).",
    )
    ws_compression: bool = Field(
        default=False,
        description="Deflate the dashboard's WebSocket messages (permessage-deflate, offered by "
        "every browser): page traffic ~30x smaller (6-12 KiB/s per open page uncompressed), "
        "but every message is compressed once per connection, video frames (JPEG) included, "
        "and each connection keeps ~200 KiB of zlib state (docs/operating.md, Many users).",
    )
    sql_max_concurrent: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Free-SQL queries (analytics page and POST /api/analytics/sql) running at "
        "once in the whole dashboard; each session may have one. More: refused as busy (429).",
    )
    pseudonym_key: str | None = Field(
        default=None,
        description="Key of the analysts' pseudonyms of personal columns; unset: a random key "
        "kept in DATA_DIR/pseudonym.key (mode 0600). Changing it changes every pseudonym.",
    )
    health_flows: str = Field(
        default="",
        description="Flows /health requires alive (comma-separated); empty: every flow that "
        "`run.py up` runs. Set it when you run only some flows.",
    )

    data_umask: str = Field(
        default="077", pattern=r"^0?[0-7]{3}$", description="umask of every Venueflow process "
        "(octal): 077 = files under DATA_DIR only for the service user; 027 = group-readable "
        "(lake, venue.duckdb) for an analysts' group. Secrets stay 0600 whatever it is."
    )  # fmt: skip

    @property
    def umask(self) -> int:
        """`DATA_UMASK` as a number, never granting anything to "others"."""
        return int(self.data_umask, 8) | 0o007

    @property
    def api_cpu_set(self) -> frozenset[int]:
        """`API_CPUS` as CPU numbers (empty: none kept)."""
        cpus: set[int] = set()
        for part in filter(None, self.api_cpus.split(",")):
            first, _, last = part.partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
        return frozenset(cpus)

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def stream_keys(self) -> list[str]:
        return [k.strip() for k in self.event_streams.split(",") if k.strip()]

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def lake(self) -> Lake:
        """The lake's location (local folder or LAKE_URI) with its storage options."""
        return lake_from_settings(self)

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "venue.duckdb"

    @property
    def recovery_dir(self) -> Path:
        return self.data_dir / "recovery"

    @property
    def effective_redis_url(self) -> str:
        """The Redis URL, falling back to the embedded server's socket-free TCP address."""
        if self.redis_url:
            return self.redis_url
        return embedded_url(self.data_dir)


@lru_cache
def get_settings() -> Settings:
    return Settings()
