"""The check-in decision, made outside Bytewax's epoch barrier and committed to Redis atomically.

Why not a Bytewax `stateful_batch` (as the first version did): measured on 2 cores, Bytewax
reads no new input at an epoch boundary until every operator has snapshotted and the recovery
store has committed that epoch. With 50,000 participants that pause was 250-650 ms every
`SNAPSHOT_INTERVAL_S`, so at 1,000 check-ins/s one verdict in three waited, p99 0.6-1.2 s,
while the same decision in a plain loop answered within 1-5 ms. A gate needs its verdict now.

So the decision runs here, as a transactional stage (the pattern of Kafka Streams'
exactly-once: state, outputs and input offsets committed together), in `CHECKIN_DECIDERS`
child processes of the check-in flow. Its source (`connectors.redis_staged_source`) starts
them and they die with the flow. Each owns the participants whose key hashes to it
(`checkins_logic.shard_of`): it reads every entry but verifies and decides only its share, so
the costly work is split over the cores. Processes, not threads: measured, a thread shared the
GIL with the dataflow, which held verdicts up to its 5 ms switch interval and capped both at
one core; one process reached 7,300 check-ins/s, two 11,100.

1. read `participants:in` + `checkins:in` in the one deterministic merged order
   (`connectors.redis_merged_streams`), from this shard's committed offsets;
2. `parse_input` + `step` — the same single decision function as before — per item;
3. one `MULTI … EXEC` per batch: the changed participant states (`checkins:decider:<shard>:state`),
   the nonces first used in it (`checkins:decider:<shard>:nonce:<nonce>`: a nonce names one scan,
   whichever participant it comes with — `checkins_logic.NonceBook`),
   every verdict (`checkins:verdict:<gate>`, `verdict:<nonce>`, `checkins:verdicts`), dead
   letters, the batch of outcomes for the Bytewax part (`checkins:decided:<shard>`), and the
   offsets.

Either all of a batch is in Redis or none of it, so a `kill -9` at any instant resumes from a
consistent state: nobody is admitted twice and every scan gets exactly one decision. If a
commit fails (Redis down or restarted) the stage drops the states it holds, reloads its
offsets from Redis and carries on from there. Everything downstream — the lake, per-minute
windows, live totals — stays in the Bytewax dataflow, which reads each shard's
`checkins:decided:<shard>` as a resumable partition.

The state hash is the truth; in memory a decider holds only a bounded cache of it
(`StateCache`, at most `CHECKIN_STATE_CACHE_SCANS` scans' worth of states): before deciding a
batch it reads the states of the batch's participants it does not hold with one HMGET
(`_fetch`), and after the batch's EXEC it drops the least recently used beyond the bound, all
of them committed by then. Before, every state was held, read in full (HSCAN) at start: the
20-minute soak saw the deciders grow 3.30 MiB/min, and a start with 1,000,000 one-scan states
took 85-152 s (32 s CPU) and 2.2 GiB RSS; now it reads only the offsets, 0.01 s and 73 MiB
(`/tmp` script over a private redis-server, not kept, 2026-12-04, load 9-11). The soak,
`bench.soak --event-rate 2000 --checkin-rate 200` (100 scans/s per decider, 2026-12-04/05):
with `--minutes 10 --state-cache-scans 20000` (load 6-27) the bound was full after ~2 minutes
and both deciders grew +0.31 / +0.38 MiB/min after the 5-minute warm-up (100-102 MiB), and
with `--minutes 18` (load 9-19) +0.00 / +0.00 MiB/min, at 99 MiB from minute 5 to 18; with
the default bound, `--minutes 20 --warmup 16` (load 14-20), they grew as before, 86 → 142
MiB, until it was full after ~16 minutes, then +0.79 / +0.82 MiB/min to 145 MiB.

The rule (who starts a decider, and why not the supervisor): a decider is a *part* of the
check-in flow, not a process of its own. The flow starts decider `<shard>` when it builds the
partition that reads `checkins:decided:<shard>`, the kernel SIGKILLs it the moment the flow
dies (`ops.processes.ChildStage`), and a decider that dies crashes the flow — so a restart
always brings back the flow and all its deciders together, and two deciders of one shard never
decide at once (each would admit the same people from the same offsets). The supervisor knows
them all the same: `ops.processes.FLOW_SPECS` names them (`checkins decider <shard>`, by
this module's command line), `run.py up` logs each start and death with the pid, `run.py ps`
lists them, and a flow restart caused by a decider's death names it. Supervising them as
separate processes would also work for the hand-off itself (it is the Redis stream, resumed
from the flow's snapshot), but every runner of the flow — tests, benchmarks, `run.py flow
checkins` — would then have to start the deciders as well.
"""

from __future__ import annotations

import gc
import json
import logging
import pickle
import sys
import time
from collections import OrderedDict, deque
from datetime import UTC, datetime
from typing import Any

import redis

from connectors.redis_merged_streams import RedisMergedStreamSource
from connectors.redis_streams import StreamBatch, trim_before
from core import keys
from core.redis_conn import connect
from core.settings import get_settings
from core.shutdown import install_stop_handlers, stop_requested
from core.tokens import TokenVerifier, load_verifier
from core.venue import Venue, venue_for
from flows.checkins_logic import (
    Decided,
    NonceBook,
    NonceUse,
    ParsedInput,
    ParticipantState,
    Scan,
    dumps,
    global_commands,
    outcome_dead_letters,
    parse_input,
    step,
)

log = logging.getLogger(__name__)

_TRIM_EVERY_S = 1.0
_STATS_EVERY_S = 60  # how often the state cache's hits are logged
#: SET KEYS[i] ARGV[i+1] EX ARGV[1], for every key: a batch's new nonces in one command. One
#: SET per nonce in the MULTI cost 13-16 client CPU µs per nonce (redis-py builds and parses
#: each), this 2 (and the server 4-5 µs vs 4-8): measured over 20 transactions of 1,000 nonces
#: against a local redis-server (/tmp micro-benchmark, not kept).
_SET_EACH = "for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[i + 1], 'EX', ARGV[1]) end"


class StateCache:
    """The participant states a decider holds in memory: the least recently used ones are
    dropped once they weigh more than `bound` scans in all (a state weighs 1 + its kept scans
    + its remembered refusals, so a few long histories weigh what they cost). The decider's
    hash in Redis (`keys.decider_state_key`) holds every state and stays the truth: a state not
    here is read from it (`CheckinDecider._fetch`), and one is dropped only once committed
    there.

    Measured with an in-process decider on a private redis-server (`/tmp` script, not kept;
    25,000 participants then 100,000 `bench.checkins.Generator` scans, one decider's share of
    `bench.checkins`' defaults; 2026-12-04, load 13-27):

    * memory: 929 B per unit of weight (tracemalloc of the unpickled states: 4.5 KB per
      state of ~4 scans; the participant's record and the objects around the history cost
      ~2.4 KB, a kept scan 545 B as bench/README.md measured); pickled: 225 B per unit.
      In the soak's RSS, with ~10 scans per state: 56-59 MiB per 100,000 units;
    * the default bound (`CHECKIN_STATE_CACHE_SCANS`, 100,000) read 3,268 states back from
      Redis for the 100,000 scans (97 % hits); 20,000 in the 10-minute soak at 100 scans/s
      per decider read ~36 % (the soak's crowd is scanned uniformly, the worst case for LRU);
    * a state read back costs its share of the batch's HMGET and its unpickling, 30 µs for
      those states, against 190-200 µs of decider CPU per scan in the same runs.

    Why the cached states stay unpickled objects rather than bytes (as `flows.cached_state`
    keeps idle Bytewax states): bytes would hold 4x more states per MiB, but a state kept as
    bytes costs the same unpickling when it is scanned again as one read back from Redis, so
    they would save only the HMGET's share, while Redis holds those bytes already. And why no
    `gc.freeze()` of the filled cache: the collector hardly runs in a decider
    (`gc.set_threshold(50_000, …)` in `main`, and every state evicted frees about what one read
    back allocates): 7-9 collections in those 100,000 scans, 2.0-2.5 µs per scan in all,
    the same whether the cache was frozen once full or not (2.0 against 2.3 µs, bound
    100,000). The gc.freeze() of the states loaded at start is gone with the loading.
    """

    def __init__(self, bound: int):
        self.bound = bound
        self._lru: OrderedDict[str, tuple[ParticipantState, int]] = OrderedDict()
        self.scans = 0  # sum of the cached states' weights
        self.looked_up = self.fetched = 0  # keys a batch touched; of them, read from Redis

    def __len__(self) -> int:
        return len(self._lru)

    def missing(self, keys_: list[str]) -> list[str]:
        """Those of `keys_` not held (each once, in order)."""
        self.looked_up += len(keys_)
        return [k for k in dict.fromkeys(keys_) if k not in self._lru]

    def get(self, key: str) -> ParticipantState | None:
        """The state of `key`, now the most recently used (None: not held)."""
        got = self._lru.get(key)
        if got is None:
            return None
        self._lru.move_to_end(key)
        return got[0]

    def put(self, key: str, st: ParticipantState | None) -> None:
        """Hold `st` as `key`'s state (None: forget it). A key not held comes last (the most
        recently used); one held keeps its place, where `get` put it (replaced in place: a pop
        and re-insert made `get` + `put` cost 2.0-2.2 µs per key instead of 1.4-1.9, timeit
        over 1,000-key batches on the loaded 2-core machine)."""
        old = self._lru.get(key)
        if old is not None:
            self.scans -= old[1]
        if st is None:
            if old is not None:
                del self._lru[key]
            return
        weight = 1 + len(st.history) + len(st.refused)
        self._lru[key] = (st, weight)
        self.scans += weight

    def evict(self) -> int:
        """Drop the least recently used states until at most `bound` scans are held; only
        when every held state is committed (after a batch's EXEC). Returns how many."""
        n = 0
        while self.scans > self.bound and self._lru:
            _key, (_st, weight) = self._lru.popitem(last=False)
            self.scans -= weight
            n += 1
        return n

    def clear(self) -> None:
        self._lru.clear()
        self.scans = 0


class CheckinDecider:
    """The stage: `run()` decides until a stop is requested (SIGINT/SIGTERM)."""

    def __init__(
        self,
        url: str,
        venue: Venue,
        verifier: TokenVerifier,
        max_bytes: int,
        retention: float,
        shard: int = 0,
        shards: int = 1,
        count: int = 1000,
        stream_shards: int = 1,
        cache_scans: int | None = None,
    ):
        """Decider `shard` of `shards`. With `stream_shards` > 1 (then `shards` equals it) it
        reads only its own input shard and decides all of it; with one input stream it reads
        every entry and decides its share (`parse_input`). `cache_scans`: the bound of the
        states held in memory (`StateCache`; None: `CHECKIN_STATE_CACHE_SCANS`)."""
        self._url, self._venue, self._verifier = url, venue, verifier
        self._max_bytes, self._retention, self._count = max_bytes, retention, count
        self._shard, self._shards = shard, shards
        self._sharded = stream_shards > 1
        # writes to shared keys after the EXEC: with input shards, or in a Redis Cluster
        # (there the MULTI holds one slot's keys only; see `_commit`)
        self._after_exec = self._sharded or keys.CLUSTER
        self._layout = f"{shards} input shards" if self._sharded else str(shards)
        self._inputs = keys.checkin_inputs(shard if self._sharded else 0, stream_shards)
        self._state_key = keys.decider_state_key(shard, stream_shards)
        self._offsets_key = keys.decider_offsets_key(shard, stream_shards)
        self._decided_key = keys.decided_key(shard, stream_shards)
        self._nonces_key = keys.decider_nonces_key(shard, stream_shards)  # before: one hash
        self._nonce_prefix = keys.decider_nonce_key(shard, "", stream_shards)
        self._published_key = keys.decider_published_key(shard, stream_shards)
        # whose offsets bound the trimming of our inputs: every decider's, or only ours
        self._readers = (
            [self._offsets_key]
            if self._sharded
            else [keys.decider_offsets_key(i) for i in range(shards)]
        )
        self._nonces = NonceBook(self._committed_nonces)
        self._r = connect(url, socket_timeout=5, socket_connect_timeout=5)
        if cache_scans is None:
            cache_scans = get_settings().checkin_state_cache_scans
        self._cache = StateCache(cache_scans)
        self._reader: Any = None
        # (time, input ids every shard had committed then): trimmed once older than retention
        self._committed: deque[tuple[float, dict[str, str]]] = deque()

    # --- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        self._load_until_ok()
        last_trim = last_stats = time.monotonic()
        try:
            while not stop_requested():
                if time.monotonic() - last_stats >= _STATS_EVERY_S:
                    self._log_cache()
                    last_stats = time.monotonic()
                if not self._once():
                    wake = self._reader.next_awake()
                    if wake is not None:
                        pause = (wake - datetime.now(UTC)).total_seconds()
                        time.sleep(min(max(pause, 0.0), 0.5))
                trims = self._sharded or self._shard == 0
                if trims and time.monotonic() - last_trim >= _TRIM_EVERY_S:
                    self._trim()
                    last_trim = time.monotonic()
        except StopIteration:
            pass
        finally:
            self._r.close()

    # --- state -----------------------------------------------------------------------------

    def _log_cache(self) -> None:
        c = self._cache
        if c.looked_up:
            log.info(
                "decider %d/%d: %d states in memory (%d of %d scans); last %d s: %d look-ups, "
                "%d read from Redis",
                self._shard, self._shards, len(c), c.scans, c.bound, _STATS_EVERY_S,
                c.looked_up, c.fetched,
            )  # fmt: skip
        c.looked_up = c.fetched = 0

    def _load_until_ok(self) -> None:
        delay = 0.1
        while True:
            try:
                self._load()
                return
            except redis.exceptions.RedisError as exc:
                if stop_requested():
                    raise StopIteration from exc
                log.warning("decider: Redis unavailable (%s); retrying", exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _load(self) -> None:
        """State and offsets as last committed (both empty on a first start)."""
        self._r.setnx(keys.CHECKIN_DECIDER_SHARDS, self._layout)  # the first start decides
        was = self._r.get(keys.CHECKIN_DECIDER_SHARDS)
        if was is not None and was.decode() != self._layout:
            was_s = was.decode()
            hint = (
                f"set STREAM_SHARDS back to {was_s.split()[0]}"
                if was_s.endswith("input shards")
                else f"set STREAM_SHARDS=1 and CHECKIN_DECIDERS back to {was_s}"
                if self._sharded
                else f"set it back to {was_s}"
            )
            raise SystemExit(
                f"the check-in state is cut in {was_s} decider shares, not {self._layout} "
                f"(CHECKIN_DECIDERS / STREAM_SHARDS): {hint}"
            )
        self._publish_last()
        raw = self._r.get(self._offsets_key)
        offsets = json.loads(raw) if raw else {}
        self._migrate_nonce_hash()
        self._cache.clear()  # states are read from Redis as batches need them (`_fetch`)
        self._nonces = NonceBook(self._committed_nonces)  # the batch's; the rest in Redis
        self._reader = RedisMergedStreamSource(
            self._url,
            self._inputs,
            count=self._count,
            retention=0,  # trimming: `_trim`
        ).build_part("decide", "", offsets)
        log.info(
            "decider %d/%d: %d participant states in Redis, offsets %s",
            self._shard, self._shards, self._r.hlen(self._state_key), offsets or "none",
        )  # fmt: skip

    def _trim(self) -> None:
        """Trim the inputs behind what every decider reading them committed `retention` ago
        (with one input stream shard 0 trims it for all; with input shards each its own)."""
        if self._retention <= 0:
            return
        now = time.monotonic()
        try:
            raws = [self._r.get(k) for k in self._readers]  # one slot each (Cluster)
            if all(raws):
                offs = [json.loads(r) for r in raws]
                low = {k: min((o.get(k, "0-0") for o in offs), key=_order) for k in self._inputs}
                self._committed.append((now, low))
            trim_to = None
            while self._committed and now - self._committed[0][0] > self._retention:
                trim_to = self._committed.popleft()[1]
            if trim_to is not None:
                for k, minid in trim_to.items():
                    if minid != "0-0":
                        trim_before(self._r, k, minid)
        except redis.exceptions.RedisError as exc:
            log.warning("decider: trim failed (%s); will retry", exc)

    # --- one batch -------------------------------------------------------------------------

    def _once(self) -> bool:
        """Read, decide and commit one batch; False when there was nothing to read."""
        batches: list[StreamBatch] = self._reader.next_batch()
        if not batches:
            return False
        decided = Decided()
        changed: dict[str, Any] = {}
        # with input shards, everything read is ours: no share to pick, bad input is ours to report
        share, shares = (0, 1) if self._sharded else (self._shard, self._shards)
        try:  # each parse looks its nonces up in Redis (`_committed_nonces`)
            parsed = [
                parse_input(batch, self._verifier, self._max_bytes, share, shares, self._nonces)
                for batch in batches
            ]
        except redis.exceptions.RedisError as exc:
            log.warning("decider: nonce look-up failed (%s); reloading", exc)
            self._load_until_ok()
            return True
        try:
            if self._sharded:
                self._claim_nonces([i for p in parsed for _, i in p.items if isinstance(i, Scan)])
            self._fetch(parsed)
        except redis.exceptions.RedisError as exc:
            log.warning("decider: nonce claims or state look-up failed (%s); reloading", exc)
            self._load_until_ok()
            return True
        for p in parsed:
            decided.dead_rows += p.dead_rows
            for key, item in p.items:
                st, out = step(self._cache.get(key), item, self._venue)
                self._cache.put(key, st)
                changed[key] = st
                decided.dead_rows += [row for _, row in outcome_dead_letters(out)]
                decided.outcomes.append(out)
        try:
            self._commit(decided, changed)
        except redis.exceptions.RedisError as exc:
            # The in-memory state ran ahead of what Redis holds: go back to what was committed
            # (the EXEC may or may not have run; Redis alone knows) and read on from there.
            log.warning("decider: commit failed (%s); reloading the committed state", exc)
            self._load_until_ok()
            return True
        self._cache.evict()  # every held state is committed now
        return True

    def _fetch(self, parsed: list[ParsedInput]) -> None:
        """Read the states of the batch's participants that the cache does not hold, with one
        HMGET of the state hash (one key: one slot, also in a Redis Cluster). A key absent
        there has no state (`step` starts it)."""
        want = self._cache.missing([key for p in parsed for key, _ in p.items])
        if not want:
            return
        self._cache.fetched += len(want)
        for key, raw in zip(want, self._r.hmget(self._state_key, want), strict=True):
            if raw is not None:
                self._cache.put(key, pickle.loads(raw))

    def _claim_nonces(self, scans: list[Scan]) -> None:
        """With input shards, a nonce reused with another participant's ticket may come to
        another decider, whose nonce book never sees ours. So each scan whose nonce is new
        here claims it for all shards: `SET checkins:nonce:<nonce> <its use> NX` (kept as long
        as its verdict). A nonce another shard claimed first makes the scan a
        `nonce_conflict`, as a reused nonce in one shard does. A replay after a crash finds
        its own claim (same ticket, gate, direction) and decides as before. Retries check the
        claim too: a `nonce_conflict` stores nothing, so a retry of the refused scan would
        otherwise pass as the first use this shard's book records."""
        new = [s for s in scans if s.first_use is not None]  # retries too: see below
        if not new:
            return
        pipe = self._r.pipeline(transaction=False)
        for s in new:
            u = s.first_use
            assert u is not None
            doc = json.dumps([u.token_fp, u.gate_id, u.direction, u.at_ms, self._shard])
            pipe.set(keys.nonce_claim_key(s.checkin.nonce), doc, nx=True, ex=keys.VERDICT_TTL_S)
        taken = [s for s, ok in zip(new, pipe.execute(), strict=True) if not ok]
        if not taken:
            return
        raws = [self._r.get(keys.nonce_claim_key(s.checkin.nonce)) for s in taken]
        for s, raw in zip(taken, raws, strict=True):
            if raw is None:
                continue  # expired meanwhile: nobody else holds it
            fp, gate, direction, at_ms, _shard = json.loads(raw)
            claim = NonceUse(fp, gate, direction, at_ms)
            assert s.first_use is not None
            if claim.differs(s.first_use):
                s.first_use = claim  # another scan named it first: `decide` refuses this one

    def _committed_nonces(self, nonces: list[str]) -> list[bytes | None]:
        """The first uses of `nonces` this shard committed (None: new, or expired), in one
        MGET: what `NonceBook` asks per batch instead of keeping a day of nonces in memory."""
        return self._r.mget([self._nonce_prefix + n for n in nonces])

    def _migrate_nonce_hash(self) -> None:
        """First uses a decider committed before the per-nonce keys (one hash whose fields
        never expired): copied to their keys with what is left of their time, then deleted."""
        now_ms = int(time.time() * 1000)
        cursor = 0
        while True:
            cursor, chunk = self._r.hscan(self._nonces_key, cursor, count=5000)
            pipe = self._r.pipeline(transaction=False)
            for nonce, use in chunk.items():
                left = json.loads(use)[3] + keys.NONCE_KEY_TTL_S * 1000 - now_ms
                if left > 0:
                    pipe.set(self._nonce_prefix + nonce.decode(), use, px=left, nx=True)
            pipe.execute()
            if cursor == 0:
                break
        self._r.delete(self._nonces_key)

    def _commit(self, decided: Decided, changed: dict[str, Any]) -> None:
        """One MULTI/EXEC: states, nonces, the batch, the offsets — and, with one input
        stream on one server, its writes to shared keys (`global_commands`). With input shards
        or in a Redis Cluster those keys (`verdict:<nonce>`, `checkins:verdicts`,
        `checkins:dead`, `participants:index`) lie in other slots than this decider's `{k}`
        keys (one MULTI in a cluster is one slot: CROSSSLOT otherwise, measured with
        STREAM_SHARDS=1 in tests/test_redis_cluster.py), so they follow the EXEC (`_publish`)."""
        pipe = self._r.pipeline(transaction=True)
        keep = {k: dumps(st) for k, st in changed.items() if st}
        if keep:
            pipe.hset(self._state_key, mapping=keep)
        gone = [k for k, st in changed.items() if st is None]
        if gone:
            pipe.hdel(self._state_key, *gone)
        added = self._nonces.take_changes()
        if added:
            nonce_keys = [self._nonce_prefix + n for n in added]
            pipe.execute_command(
                "EVAL", _SET_EACH, len(added), *nonce_keys, keys.NONCE_KEY_TTL_S, *added.values()
            )
        has_batch = bool(decided.outcomes or decided.dead_rows)
        if has_batch and not self._after_exec:
            for c in global_commands(decided):
                pipe.execute_command(*c)
        if has_batch:
            data = dumps(decided)
            pipe.execute_command("XADD", self._decided_key, "*", "data", data)
        pipe.set(self._offsets_key, json.dumps(self._reader.position()))
        results = pipe.execute(raise_on_error=False)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            log.error("decider: %d command(s) of a batch failed, first: %s", len(failed), failed[0])
        if has_batch and self._after_exec:
            self._publish(results[-2].decode(), decided)

    def _publish(self, batch_id: str, decided: Decided) -> None:
        """The shared-key writes of committed batch `batch_id`, then the mark that they were
        made. All are idempotent (SET, HSET, PUBLISH of the same verdict) except the two
        XADDs: a `kill -9` between them and the mark repeats that one batch's entries on
        `checkins:verdicts` / `checkins:dead` (at least once there; the lake, written from
        `checkins:decided:{k}`, stays exactly once)."""
        pipe = self._r.pipeline(transaction=False)
        for c in global_commands(decided):
            pipe.execute_command(*c)
        pipe.set(self._published_key, batch_id)
        pipe.execute()

    def _publish_last(self) -> None:
        """After a crash between a batch's EXEC and its `_publish`: make those writes now."""
        if not self._after_exec:
            return
        last = self._r.xrevrange(self._decided_key, count=1)
        if not last:
            return
        batch_id, fields = last[0][0].decode(), last[0][1]
        done = self._r.get(self._published_key)
        if done is None or done.decode() != batch_id:
            log.info("decider %d: publishing committed batch %s again", self._shard, batch_id)
            self._publish(batch_id, pickle.loads(fields[b"data"]))


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def main() -> int:
    """`python -m flows.checkins_decider SHARD`: what the check-in flow starts, once per shard
    (settings from the environment, like the flow's; `keys.decider_count` deciders)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    s = get_settings()
    install_stop_handlers()
    decider = CheckinDecider(
        s.effective_redis_url,
        venue_for(s.venue_config),
        load_verifier(s.data_dir),
        s.max_checkin_bytes,
        s.stream_retention_s,
        shard=int(sys.argv[1]) if len(sys.argv) > 1 else 0,
        shards=keys.decider_count(s),
        stream_shards=s.stream_shards,
        cache_scans=s.checkin_state_cache_scans,
    )
    gc.freeze()  # modules, venue, verifier: out of the collector's full passes
    # Each batch allocates ~10 objects per scan, nearly all freed by refcount; at the default
    # threshold (700) the collector ran every ~70 scans. Measured with `parse_input` + `step`
    # over 20,000 scans (5,000 participants, loaded 2-core machine): 80-88 µs per scan at the
    # defaults, 60-66 µs with this threshold, 65-73 µs with the collector off.
    gc.set_threshold(50_000, 20, 100)
    decider.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
