"""A consumer of vern's cleaned streams: decode, de-duplicate, hand on.

    from vern_kit.consumer import Consumer
    c = Consumer("backend.db", on_record=store, on_erasure=forget, on_epoch_link=move)
    c.run("broker", 1883, ["vern/v1/+/billing/#"], group="billing")

What it guarantees (clients/python/README.md has the whole of it):
- a record reaches on_record (or on_erasure) once per (gateway, stream, seq), across restarts:
  the triple is marked seen in SQLite only after the callback returned, and that mark is
  committed before the message is acknowledged to the broker (paho sends PUBACK after
  on_message returns). A callback that raises stops the consumer with the message
  unacknowledged: the broker delivers it again to the persistent session, the records whose
  callbacks had returned are dropped as duplicates, the failing one is handed on again. So a
  callback sees a record at least once, and exactly once unless it raised (or the process died)
  after doing its work; a backend keeping its data in the same SQLite file (Consumer.db) inside
  the callback commits it with the seen mark, in one transaction.
- the seen set is bounded: per (gateway, stream) a high-water mark (every seq up to it seen)
  and the seen seqs above it, at most `window` of them. Records of a stream arrive out of order
  (alarms and images of one purpose travel in different lanes; after a reconnect the gateway
  re-sends what was not acknowledged), so a gap stays open until it fills; when more than
  `window` seqs wait above the mark, the oldest gap is given up (a gateway's disk budget can
  evict meter records for good: their seqs never come) and counted in `gaps_given_up`; a record
  of a given-up gap arriving later is dropped as if seen.
"""

import collections
import hashlib
import os
import sqlite3
import time

from .proto import clean_pb2

STREAM_KINDS = ("alarm", "meter", "image", "aggregate", "notice")

EpochLink = collections.namedtuple(
    "EpochLink", "gateway stream kind old_epoch old new_epoch new")

# Which field of which body the `previous` pseudonyms stand for.
_LINKED_FIELDS = {
    "alarm": (("customer", "customer"), ("user", "user"), ("event_id", "event_id")),
    "meter": (("meter_point", "meter_point"), ("customer", "customer")),
    "image": (("event_id", "event_id"), ("image_id", "image_id")),
    "erasure": (("customer", "customer"), ("user", "user"), ("meter_point", "meter_point")),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stream_mark (
    gateway TEXT NOT NULL, stream TEXT NOT NULL, high_water INTEGER NOT NULL,
    above INTEGER NOT NULL, PRIMARY KEY (gateway, stream));
CREATE TABLE IF NOT EXISTS seen_above (
    gateway TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (gateway, stream, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS epoch_link (
    stream TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL, kind TEXT NOT NULL,
    gateway TEXT NOT NULL, old_epoch INTEGER NOT NULL, new_epoch INTEGER NOT NULL,
    PRIMARY KEY (stream, old));
CREATE INDEX IF NOT EXISTS epoch_link_new ON epoch_link (stream, new);
"""


def pseudonyms_named(record):
    """Every pseudonym an erasure notice names (this epoch's and the previous epoch's): delete
    the records carrying any of them."""
    out = []
    if record.WhichOneof("body") == "erasure":
        n = record.erasure
        out += [p for p in (n.customer, n.user, n.meter_point) if p]
    if record.previous_key_epoch and record.HasField("previous"):
        p = record.previous
        out += [x for x in (p.customer, p.user, p.meter_point) if x]
    return out


def epoch_links(record):
    """The (old -> new) pseudonym pairs a record in a key-epoch overlap carries."""
    if not record.previous_key_epoch or not record.HasField("previous"):
        return []
    body = record.WhichOneof("body")
    links = []
    for prev_field, body_field in _LINKED_FIELDS.get(body, ()):
        old = getattr(record.previous, prev_field)
        new = getattr(getattr(record, body), body_field)
        if old and new and old != new:
            links.append(EpochLink(record.gateway, record.stream, body_field,
                                   record.previous_key_epoch, old, record.key_epoch, new))
    return links


class SeenStore:
    """The (gateway, stream, seq) triples already handed on, in SQLite (see the module text).
    Nothing is cached in memory: consumers on one machine may share a state file (each with its
    own MQTT client id); BEGIN IMMEDIATE makes each batch's check-and-mark one at a time."""

    def __init__(self, db, window=65536):
        self.db = db
        self.window = window
        self.gaps_given_up = 0
        db.executescript(_SCHEMA)

    def _stream(self, gateway, stream):
        row = self.db.execute("SELECT high_water, above FROM stream_mark WHERE gateway = ? AND "
                              "stream = ?", (gateway, stream)).fetchone()
        return row or (0, 0)

    def _above(self, gateway, stream, seq):
        return self.db.execute("SELECT 1 FROM seen_above WHERE gateway = ? AND stream = ? AND "
                               "seq = ?", (gateway, stream, seq)).fetchone() is not None

    def seen(self, gateway, stream, seq):
        return seq <= self._stream(gateway, stream)[0] or self._above(gateway, stream, seq)

    def mark(self, gateway, stream, seq):
        """Marks a triple seen, in the current transaction (the caller commits)."""
        old_mark, above = self._stream(gateway, stream)
        if seq <= old_mark or self._above(gateway, stream, seq):
            return
        mark = old_mark
        if seq == mark + 1:
            mark = seq
        else:
            self.db.execute("INSERT INTO seen_above VALUES (?, ?, ?)", (gateway, stream, seq))
            above += 1
            if above > self.window:  # give up the oldest gap: the mark moves to its end
                mark = self.db.execute("SELECT MIN(seq) FROM seen_above WHERE gateway = ? AND "
                                       "stream = ?", (gateway, stream)).fetchone()[0]
                self.gaps_given_up += 1
        while self._above(gateway, stream, mark + 1):
            mark += 1
        if mark > old_mark:
            above -= self.db.execute("DELETE FROM seen_above WHERE gateway = ? AND stream = ? "
                                     "AND seq <= ?", (gateway, stream, mark)).rowcount
        self.db.execute("INSERT INTO stream_mark VALUES (?, ?, ?, ?) ON CONFLICT (gateway, stream)"
                        " DO UPDATE SET high_water = excluded.high_water, above = excluded.above",
                        (gateway, stream, mark, above))

    def high_water(self, gateway, stream):
        return self._stream(gateway, stream)[0]

    def waiting_above(self, gateway, stream):
        return self._stream(gateway, stream)[1]


class Consumer:
    """Decodes Batches, drops seen triples, hands on records, erasure notices and epoch links.

    on_record(record): a clean_pb2.Record that is not an erasure notice.
    on_erasure(record): a Record whose body is `erasure` (pseudonyms_named(record) lists whom
        it names); without it erasure notices go to on_record.
    on_epoch_link(link): an EpochLink (old -> new pseudonym of one stream), once per pair,
        before the record carrying it is handed on; current()/previous() look pairs up later.
    Callbacks run on the consumer's thread, one at a time; they may use self.db (the same
    SQLite connection: their writes commit with the seen marks). synchronous: "FULL" (a
    commit survives a power cut) or "NORMAL" (it survives a crash of the process)."""

    def __init__(self, state_path, on_record, on_erasure=None, on_epoch_link=None,
                 window=65536, synchronous="FULL"):
        self.state_path = state_path
        # Its epoch links are pseudonyms: readable by its owner only (SQLite gives its -wal and
        # -shm files the same mode).
        os.close(os.open(state_path, os.O_RDWR | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(state_path, isolation_level=None, timeout=60)  # ours
        self.db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before the PUBACK, power cuts included (one fsync per
        # message); NORMAL: safe against a crash of the process, a power cut may forget the last
        # marks (their records were acknowledged: only a later repeat of one would pass).
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        self.seen = SeenStore(self.db, window)
        self.on_record = on_record
        self.on_erasure = on_erasure
        self.on_epoch_link = on_epoch_link
        self.counts = collections.Counter()
        self._stop = False

    # --- the core, without a broker --------------------------------------------------------
    def handle_payload(self, payload, topic=None):
        """Handles one MQTT message of a stream topic. Returns the number of new records."""
        if topic is not None:
            levels = topic.split("/")
            if levels[-1] not in STREAM_KINDS or "control" in levels or len(levels) < 4:
                self.counts["not_a_stream"] += 1  # a status or control message under the filter
                return 0
        try:
            batch = clean_pb2.Batch.FromString(payload)
        except Exception:  # protobuf's DecodeError, or worse: a bad message never gets better
            self.counts["undecodable"] += 1
            return 0
        new = 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for record in batch.records:
                if not record.gateway or not record.stream or record.seq == 0:
                    self.counts["invalid"] += 1
                    continue
                if self.seen.seen(record.gateway, record.stream, record.seq):
                    self.counts["duplicates"] += 1
                    continue
                for link in epoch_links(record):
                    if self._add_link(link) and self.on_epoch_link:
                        self.on_epoch_link(link)
                erasure = record.WhichOneof("body") == "erasure"
                (self.on_erasure if erasure and self.on_erasure else self.on_record)(record)
                self.seen.mark(record.gateway, record.stream, record.seq)
                self.counts["erasures"] += erasure
                self.counts["records"] += 1
                new += 1
        finally:  # what returned is kept, even when a later callback raised
            if self.db.in_transaction:
                self.db.execute("COMMIT")
        return new

    def _add_link(self, link):
        cur = self.db.execute(
            "INSERT OR IGNORE INTO epoch_link VALUES (?, ?, ?, ?, ?, ?, ?)",
            (link.stream, link.old, link.new, link.kind, link.gateway, link.old_epoch,
             link.new_epoch))
        if cur.rowcount:
            self.counts["epoch_links"] += 1
        return cur.rowcount == 1

    def current(self, stream, old):
        """The pseudonym that replaced `old` in `stream`'s newer epoch, or None."""
        row = self.db.execute("SELECT new FROM epoch_link WHERE stream = ? AND old = ?",
                              (stream, old)).fetchone()
        return row[0] if row else None

    def previous(self, stream, new):
        """The pseudonym `new` replaced in `stream`'s previous epoch, or None."""
        row = self.db.execute("SELECT old FROM epoch_link WHERE stream = ? AND new = ?",
                              (stream, new)).fetchone()
        return row[0] if row else None

    # --- over MQTT ---------------------------------------------------------------------------
    def default_client_id(self):
        """One persistent session per state file: the broker keeps what arrives while away."""
        h = hashlib.sha256(os.path.abspath(self.state_path).encode()).hexdigest()[:12]
        return f"vern-consume-{h}"

    def stop(self):
        self._stop = True

    def run(self, host, port, topics, group=None, client_id=None, protocol="5", qos=1,
            count=None, idle_timeout_s=None, session_expiry_s=86400, on_ready=None):
        """Subscribes (as `$share/{group}/{filter}` with a group) and hands on records until
        stop(), `count` new records (checked after each message: a batch is handled whole), or
        `idle_timeout_s` without a message. A callback's
        exception ends it, the message unacknowledged (see the module text)."""
        from .mqtt import Connection
        conn = Connection(host, port, client_id or self.default_client_id(), protocol,
                          session_expiry_s)
        last = [time.monotonic()]

        def on_message(client, userdata, msg):
            last[0] = time.monotonic()
            self.handle_payload(msg.payload, msg.topic)

        conn.client.on_message = on_message
        for t in topics:
            conn.subscribe(f"$share/{group}/{t}" if group else t, qos)
        conn.connect()
        if on_ready:
            on_ready()

        def done():
            if self._stop or (count is not None and self.counts["records"] >= count):
                return True
            return idle_timeout_s is not None and time.monotonic() - last[0] > idle_timeout_s

        try:
            conn.loop(done)
        finally:
            conn.close()

    def close(self):
        self.db.close()
