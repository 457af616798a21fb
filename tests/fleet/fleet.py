#!/usr/bin/python3
"""The fleet bench's backend side (bench/fleet.sh): consumers in one MQTT 5 shared subscription
group, and the check of what they got against what each gateway says it forwarded.

  fleet.py consume --port P --name N --db FILE --report FILE [--kit DIR | --proto-py DIR]
      One consumer of group G (--group, default fleet). Every record it accepts goes into the
      table `seen` of FILE (triple, kind, consumer, arrival), its pseudonyms into `held` until
      an erasure notice names one of them; a notice goes into `notices`. Rewrites REPORT (JSON
      counters) every second and on SIGTERM, which ends it.
      --kit DIR: the consumer kit (clients/python, DIR holds vern_kit with its generated
        protos): vern_kit.consumer.Consumer de-duplicates by (gateway, stream, seq) in FILE,
        which the group's consumers share (the kit's model: a repeat may reach another member);
        the group's shared subscription carries records and notices alike
        ($share/G/vern/v1/+/+/+), so each notice reaches one member, which erases from the
        shared store. Its callbacks write to the kit's connection: one transaction with its
        seen marks.
      --proto-py DIR (without the kit; DIR holds clean_pb2): a consumer of its own, de-duplicating
        in its own FILE (PRIMARY KEY on the triple); records through the shared subscription
        ($share/G/vern/v1/+/+/{alarm,meter,image,aggregate}), notices through a subscription of
        its own (vern/v1/+/+/notice), so every consumer hears every notice and erases its own
        copies.
      Either way a notice erases the records of its (gateway, stream) that carry a pseudonym it
      names and have a lower seq (the gateway numbers a stream in commit order: a higher seq is
      a fresh start after the erasure), and stays as a tombstone, so a record from before it that
      arrives later (at a slower member) is not kept.

  fleet.py replay --port P --file FILE
      Publishes again (QoS 1) each message of FILE (lines "TOPIC HEXPAYLOAD", as
      `mosquitto_sub -F '%t %x'` writes them): what a gateway does after a crash or a lost link,
      for the consumers to drop as duplicates. Prints the number of records replayed.

  fleet.py check --run DIR [--mutate HOW]
      Reads what bench/fleet.sh left in DIR (fleet.json: the gateways, the consumers, the mode,
      the erasure's target and the pseudonyms it expects in the notices; each gateway's
      status.json and simulator report; the consumers' SQLite files and reports), prints the
      figures and exits 1 if a promise failed: every record a gateway says the upstream broker
      acknowledged reached exactly one consumer once after de-duplication, no sequence number
      is missing, the records match the simulators' events, the erasure was carried out on its
      gateway and nowhere else, its notices were heard (by every consumer, or once by the group
      with the kit) and nothing of the erased subject from before them is held.
      --mutate breaks the loaded results first (lose, twice, erase-elsewhere, notice-missed):
      the check must then fail.

Nothing here prints a pseudonym or a record: figures only.
"""
import argparse
import json
import os
import signal
import sqlite3
import sys
import threading
import time

RECORD_KINDS = ("alarm", "meter", "image", "aggregate")

# The consumer's own tables (next to the kit's in a shared file). `seen` has a PRIMARY KEY on the
# triple only without the kit; with it, the kit de-duplicates and a double is left for the check
# to find.
def schema(unique):
    key = ",\n    PRIMARY KEY (gateway, stream, seq)" if unique else ""
    return f"""
CREATE TABLE IF NOT EXISTS seen (
    gateway TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    kind TEXT NOT NULL, consumer TEXT NOT NULL, received_ms INTEGER NOT NULL{key});
CREATE INDEX IF NOT EXISTS seen_by_triple ON seen (gateway, stream, seq);
CREATE TABLE IF NOT EXISTS held (
    gateway TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    event_time_ms INTEGER NOT NULL, pseudonym TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS held_by_pseudonym ON held (gateway, stream, pseudonym);
CREATE TABLE IF NOT EXISTS notices (
    gateway TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    erased_ms INTEGER NOT NULL, pseudonym TEXT NOT NULL, records_deleted INTEGER NOT NULL,
    consumer TEXT NOT NULL);
"""



def pseudonyms_of(record):
    """The pseudonyms a record carries (body and `previous`), for erasure by notice."""
    body = record.WhichOneof("body")
    out = []
    if body == "alarm":
        out += [record.alarm.customer, record.alarm.user]
    elif body == "meter":
        out += [record.meter.customer, record.meter.meter_point]
    elif body == "erasure":
        out += [record.erasure.customer, record.erasure.user, record.erasure.meter_point]
    if record.HasField("previous"):
        p = record.previous
        out += [p.customer, p.user, p.meter_point]
    return [p for p in out if p]


class Store:
    """What a backend keeps, in SQLite: the records' triples (`seen`), their pseudonyms (`held`)
    until a notice erases them, the notices (`notices`, also the tombstones)."""

    def __init__(self, db, name, counts):
        self.db, self.name, self.counts = db, name, counts

    def keep(self, r, kind, now):
        """A new record (after de-duplication): its triple, and its pseudonyms unless a notice
        already erased them (the notice has the higher seq: the record is from before it)."""
        self.db.execute("INSERT INTO seen VALUES (?, ?, ?, ?, ?, ?)",
                        (r.gateway, r.stream, r.seq, kind, self.name, now))
        self.counts["accepted"] += 1
        if kind == "erasure":
            self.erase(r)
            return
        ps = pseudonyms_of(r)
        if any(self.db.execute("SELECT 1 FROM notices WHERE gateway = ? AND stream = ? AND "
                               "pseudonym = ? AND seq > ?", (r.gateway, r.stream, p, r.seq))
               .fetchone() for p in ps):
            self.counts["records_deleted_by_notices"] += 1
            return
        for p in ps:
            self.db.execute("INSERT INTO held VALUES (?, ?, ?, ?, ?)",
                            (r.gateway, r.stream, r.seq, r.event_time_ms, p))

    def erase(self, r):
        """The backend's erasure callback: delete every copy held under a pseudonym the notice
        names and committed before it (a lower seq in the same gateway and stream)."""
        self.counts["notices"] += 1
        for p in pseudonyms_of(r):
            where = "gateway = ? AND stream = ? AND seq < ? AND seq IN " \
                    "(SELECT seq FROM held WHERE gateway = ? AND stream = ? AND pseudonym = ?)"
            params = (r.gateway, r.stream, r.seq, r.gateway, r.stream, p)
            n = self.db.execute(f"SELECT COUNT(DISTINCT seq) FROM held WHERE {where}",
                                params).fetchone()[0]
            self.db.execute(f"DELETE FROM held WHERE {where}", params)
            self.db.execute("INSERT INTO notices VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (r.gateway, r.stream, r.seq, r.erasure.erased_ms, p, n, self.name))
            self.counts["records_deleted_by_notices"] += n


class Consumer:
    """One member of the group: the kit's Consumer (--kit) or one of its own (--proto-py)."""

    def __init__(self, args):
        self.args = args
        self.stopping = False
        self.counts = {"name": args.name, "mode": "kit" if args.kit else "own", "messages": 0,
                       "bytes": 0, "records": 0, "accepted": 0, "duplicates": 0,
                       "undecodable": 0, "notices": 0, "records_deleted_by_notices": 0,
                       "subscribed": False, "by_kind": {}}
        self.last_report = 0.0

    def count_message(self, msg):
        if "/control" in msg.topic:  # the control channel's results, not a stream
            return {"records": 0}
        self.counts["messages"] += 1
        self.counts["bytes"] += len(msg.payload)
        kind = msg.topic.rsplit("/", 1)[-1]
        by = self.counts["by_kind"].setdefault(kind, {"messages": 0, "bytes": 0, "records": 0})
        by["messages"] += 1
        by["bytes"] += len(msg.payload)
        return by

    def write_report(self, force=False):
        if not force and time.monotonic() - self.last_report < 1:
            return
        self.last_report = time.monotonic()
        for _ in range(10):
            try:  # (the kit's thread may be adding a kind to by_kind meanwhile: try again)
                text = json.dumps(self.counts)
                break
            except RuntimeError:
                time.sleep(0.01)
        else:
            return
        tmp = f"{self.args.report}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.args.report)

    def run(self):
        def stop(signum, frame):
            self.stopping = True
            if getattr(self, "kit", None) is not None:
                self.kit.stop()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self.args.kit:
            self.run_kit()
        else:
            self.run_own()
        self.write_report(force=True)
        return 0

    # --- with the consumer kit ----------------------------------------------------------------
    def run_kit(self):
        sys.path.insert(0, self.args.kit)
        from vern_kit import consumer as kit

        def on_record(r):
            self.store.keep(r, r.WhichOneof("body") or "none", int(time.time() * 1000))
            self.write_report()

        self.kit = kit.Consumer(self.args.db, on_record=on_record, on_erasure=on_record)
        self.kit.db.executescript(schema(unique=False))
        self.store = Store(self.kit.db, self.args.name, self.counts)
        handle = self.kit.handle_payload

        def counted(payload, topic=None):  # the message's size and kind, then the kit's work
            class Msg:
                pass
            m = Msg()
            m.payload, m.topic = payload, topic
            by = self.count_message(m)
            before = self.kit.counts["records"] + self.kit.counts["duplicates"]
            n = handle(payload, topic)
            by["records"] += self.kit.counts["records"] + self.kit.counts["duplicates"] - before
            self.counts["records"] += (self.kit.counts["records"] + self.kit.counts["duplicates"]
                                       - before)
            self.counts["duplicates"] = self.kit.counts["duplicates"]
            self.counts["undecodable"] = self.kit.counts["undecodable"]
            self.write_report()
            return n
        self.kit.handle_payload = counted

        def ready():
            self.counts["subscribed"] = True
            self.write_report(force=True)

        def reporter():  # the kit's loop has no hook of its own: a report every second
            while not self.stopping:
                time.sleep(1)
                self.write_report(force=True)
        threading.Thread(target=reporter, daemon=True).start()

        g = self.args.group
        self.kit.run("127.0.0.1", self.args.port, ["vern/v1/+/+/+"], group=g,
                     client_id=f"fleet-{g}-{self.args.name}", on_ready=ready,
                     idle_timeout_s=None)
        self.kit.close()

    # --- a consumer of its own ----------------------------------------------------------------
    def run_own(self):
        sys.path.insert(0, self.args.proto_py)
        import clean_pb2  # generated by protoc at run time (bench/fleet.sh)
        import paho.mqtt.client as mqtt

        self.pb = clean_pb2
        self.db = sqlite3.connect(self.args.db)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(schema(unique=True))
        self.store = Store(self.db, self.args.name, self.counts)
        client = mqtt.Client(client_id=f"fleet-{self.args.name}-{os.getpid()}",
                             protocol=mqtt.MQTTv5)

        def on_connect(client, userdata, flags, rc, properties=None):
            g = self.args.group
            topics = [(f"$share/{g}/vern/v1/+/+/{k}", 1) for k in RECORD_KINDS]
            topics.append(("vern/v1/+/+/notice", 1))
            client.subscribe(topics)

        def on_subscribe(client, userdata, mid, reason_codes, properties=None):
            self.counts["subscribed"] = all(int(getattr(c, "value", c)) < 0x80
                                            for c in reason_codes)
            self.write_report(force=True)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = self.on_message
        client.connect("127.0.0.1", self.args.port, keepalive=30)
        # One thread: paho's callbacks run inside loop(), where SQLite was opened.
        while not self.stopping:
            client.loop(timeout=0.2)
            self.write_report()
        client.disconnect()
        self.db.commit()

    def on_message(self, client, userdata, msg):
        by = self.count_message(msg)
        batch = self.pb.Batch()
        try:
            batch.ParseFromString(msg.payload)
        except Exception:  # a payload that is not a Batch: counted, never printed
            self.counts["undecodable"] += 1
            return
        now = int(time.time() * 1000)
        by["records"] += len(batch.records)
        for r in batch.records:
            self.counts["records"] += 1
            kind = r.WhichOneof("body") or "none"
            if self.db.execute("SELECT 1 FROM seen WHERE gateway = ? AND stream = ? AND seq = ?",
                               (r.gateway, r.stream, r.seq)).fetchone():
                self.counts["duplicates"] += 1
                continue
            self.store.keep(r, kind, now)
        # Committed before the callback returns, and so before paho acknowledges the message:
        # a consumer that dies in between gets it again and drops it as a duplicate.
        self.db.commit()


# --- the check -------------------------------------------------------------------------------

def load(path):
    with open(path) as f:
        return json.load(f)


def ranges_missing(seqs, top):
    """How many of 1..top are not in seqs."""
    return top - len([s for s in seqs if 1 <= s <= top])


def expected_from_sim(report):
    """Records a simulator's receipted events make with the default purposes: one alarm record
    per alarm event, one image record per verification image, one billing record per meter and
    hour (four quarter-hour readings, the last hour possibly fewer)."""
    def count(ranges):
        return sum(b - a + 1 for a, b in ranges)
    alarms = meters = 0
    for device, d in report.get("devices", {}).items():
        kinds = d.get("kinds", {})
        alarms += count(kinds.get("alarm", []))
        n = count(kinds.get("meter", []))
        meters += (n + 3) // 4
    return {"alarm": alarms, "image": report.get("images_receipted", 0), "meter": meters}


def mutate(how, by_triple, status, notices_by_consumer, target):
    """--mutate: break the loaded results the way a fault would, so that the check can be seen
    to fail (bench/fleet.sh runs each after the real check and wants exit 1 from it)."""
    if not how:
        return
    some = sorted(t for t in by_triple if t[3] not in ("erasure", "site_aggregate"))[0]
    if how == "lose":  # a record no consumer got
        del by_triple[some]
    elif how == "twice":  # a record accepted twice in the group
        by_triple[some] = by_triple[some] * 2
    elif how == "erase-elsewhere":  # another gateway erased too
        other = sorted(gw for gw in status if gw != target)[0]
        status[other]["counters"]["rights_erasures"] = 1
    elif how == "notice-missed":  # a consumer (with the kit: the group) never heard a notice
        first = sorted(r[:3] for rows in notices_by_consumer.values() for r in rows)[0]
        for name in sorted(notices_by_consumer):
            rows = notices_by_consumer[name]
            if any(r[:3] == first for r in rows):
                notices_by_consumer[name] = [r for r in rows if r[:3] != first]
                break
    else:
        raise SystemExit(f"fleet.py: no mutation {how}")


def check(args):
    run = args.run
    fleet = load(os.path.join(run, "fleet.json"))
    failures = []

    def expect(ok, what):
        if not ok:
            failures.append(what)

    gateways = fleet["gateways"]  # [{id, dir, sim_report}]
    target = fleet["erase"]["gateway"]
    consumers = fleet["consumers"]  # [{name, db, report}]
    status = {g["id"]: load(os.path.join(g["dir"], "var", "status.json")) for g in gateways}
    sims = {g["id"]: load(g["sim_report"]) for g in gateways}
    reports = [load(c["report"]) for c in consumers]

    # Every consumer's accepted triples, and who accepted each.
    by_triple = {}
    notices_by_consumer = {}
    held_erased_before = 0
    arrival = None  # (first, last) record's arrival at a consumer, Unix ms
    kit = fleet.get("mode") == "kit"  # one store shared by the group, or one per consumer
    notices_by_consumer = {c["name"]: [] for c in consumers}
    for path in sorted({c["db"] for c in consumers}):
        db = sqlite3.connect(path)
        first, last = db.execute("SELECT MIN(received_ms), MAX(received_ms) FROM seen").fetchone()
        if first is not None:
            arrival = (min(arrival[0], first), max(arrival[1], last)) if arrival else (first, last)
        for gw, stream, seq, kind, who in db.execute(
                "SELECT gateway, stream, seq, kind, consumer FROM seen"):
            by_triple.setdefault((gw, stream, seq, kind), []).append(who)
        rows = db.execute("SELECT consumer, gateway, stream, seq, erased_ms, pseudonym "
                          "FROM notices").fetchall()
        for who, *row in rows:
            notices_by_consumer.setdefault(who, []).append(tuple(row))
        # The erased subject's copies from before its notice that a store still holds.
        for _, gw, stream, seq, erased_ms, p in rows:
            held_erased_before += db.execute(
                "SELECT COUNT(*) FROM held WHERE gateway = ? AND stream = ? AND pseudonym = ? "
                "AND seq < ?", (gw, stream, p, seq)).fetchone()[0]
        db.close()

    mutate(args.mutate, by_triple, status, notices_by_consumer, target)
    records = {t: who for t, who in by_triple.items() if t[3] != "erasure"}
    notices = {t: who for t, who in by_triple.items() if t[3] == "erasure"}
    per_consumer = {c["name"]: 0 for c in consumers}
    for t, who in records.items():
        for n in who:
            per_consumer[n] += 1
    twice = sum(1 for who in records.values() if len(who) > 1)
    expect(twice == 0, f"{twice} records were accepted more than once in the group")

    # What each gateway says: records the upstream broker acknowledged, seqs it handed out.
    forwarded = 0
    expected_records = 0
    total_corrections = 0
    lost = 0
    missing_seqs = 0
    erasures = {}
    for g in gateways:
        gw = g["id"]
        k = status[gw]["counters"]
        delivered = k.get("forward_delivered", 0)
        forwarded += delivered
        got = [t for t in by_triple if t[0] == gw]
        expect(len(got) == delivered,
               f"{gw}: the upstream broker acknowledged {delivered} records, "
               f"the consumers accepted {len(got)}")
        lost += max(0, delivered - len(got))
        # Nothing dropped on the way: no budget eviction, expiry, quarantine or skipped seq.
        for counter, n in k.items():
            if n and (counter.startswith(("evicted_", "dropped_", "quarantined_")) or
                      counter in ("records_expired", "seq_numbers_skipped", "ingest_overflow")):
                expect(False, f"{gw}: {counter} = {n}")
        # Every stream's seqs from 1 up, without a gap but the records the erasure purged.
        streams = {}
        for t in got:
            streams.setdefault(t[1], []).append(t[2])
        gaps = sum(ranges_missing(s, max(s)) for s in streams.values())
        purged = k.get("rights_records_purged", 0)
        missing_seqs += gaps
        expect(gaps <= purged, f"{gw}: {gaps} sequence numbers missing, {purged} purged by erasure")
        erasures[gw] = (k.get("rights_erasures", 0), k.get("rights_erasure_notices", 0))
        # Every committed record acknowledged upstream, but those the erasure purged; a purged
        # record already in flight to the broker is acknowledged too (and erased by the notice).
        committed = k.get("records_committed", 0)
        expect(committed - purged <= delivered <= committed,
               f"{gw}: {committed} records committed, {delivered} acknowledged upstream, "
               f"{purged} purged by erasure")
        # The simulator's side: every event sent was receipted (committed) by this gateway, and
        # became the records the purposes make of it: an alarm record per alarm event, an image
        # record per verification image, a billing record per meter and hour of readings.
        s = sims[gw]
        expect(s.get("unreceipted", 1) == 0 and s.get("receipted") == s.get("sent"),
               f"{gw}: simulator sent {s.get('sent')}, receipted {s.get('receipted')}")
        want = expected_from_sim(s)
        # An hour closed before its last reading came (meter_close_after_s, under load) gets
        # that reading as a correction record of its own: one more billing record, counted.
        corrections = k.get("policy_meter_late_corrections", 0)
        want["meter"] += corrections
        total_corrections += corrections
        have = {"alarm": 0, "image": 0, "meter": 0}
        for t in got:
            if t[3] in have:
                have[t[3]] += 1
        expected_records += sum(want.values())
        # On the erasure's gateway an image of the subject's alarm still on its way when the
        # erasure lands is not linked any more and is dropped (docs/design.md, "Erasure"):
        # counted, and allowed there only.
        dropped_images = k.get("policy_images_unlinked", 0) if gw == target else 0
        for kind in want:
            slack = purged + (dropped_images if kind == "image" else 0)
            expect(want[kind] - slack <= have[kind] <= want[kind],
                   f"{gw}: {have[kind]} {kind} records for the {want[kind]} the simulator's "
                   f"events make ({purged} purged by erasure)")

    # The erasure: on its gateway only, its notices heard by every consumer.
    want_pseudonyms = set(fleet["erase"]["pseudonyms"].values())
    expect(erasures[target][0] == 1, f"{target}: rights_erasures {erasures[target][0]}, not 1")
    for gw, (n, _) in erasures.items():
        if gw != target:
            expect(n == 0, f"{gw}: rights_erasures {n}: the erasure was sent to {target} only")
    if fleet["erase"].get("via") == "control":
        # The signed command went to the target only: no other gateway got a command at all,
        # the target carried it out, and its signed result came back OK to the controller.
        for gw in status:
            k = status[gw]["counters"]
            want = 1 if gw == target else 0
            expect(k.get("control_commands", 0) == want and k.get("control_done", 0) == want,
                   f"{gw}: control_commands {k.get('control_commands')}, control_done "
                   f"{k.get('control_done')}: the controller sent one command, to {target}")
            refused = sum(n for c, n in k.items() if c.startswith("control_refused_"))
            expect(refused == 0, f"{gw}: {refused} control commands refused")
        expect(fleet["erase"].get("result_ok") is True,
               f"vern-controller results: no OK result from {target}")
    audit = fleet["erase"].get("audit_erasures", {})
    for gw, n in audit.items():
        expect(n == (1 if gw == target else 0),
               f"{gw}: {n} subject.erase entries in its audit log (-1: unreadable)")
    expect(len(audit) == len(gateways), "not every gateway's audit log was read")
    expect(all(t[0] == target for t in notices),
           "an erasure notice came from a gateway that was not asked to erase")
    expect(len(notices) == erasures[target][1] and len(notices) > 0,
           f"{len(notices)} erasure notices upstream, {target} says it queued "
           f"{erasures[target][1]}")
    if kit:
        # One store for the group: each notice taken once, by whichever member got it.
        for t, who in notices.items():
            expect(len(who) == 1, f"notice {t[1]} seq {t[2]}: taken by {len(who)} consumers")
        heard_by = {"the group": [r for rows in notices_by_consumer.values() for r in rows]}
    else:
        # A store per consumer: every consumer hears every notice.
        heard_by = notices_by_consumer
    for name, rows in heard_by.items():
        heard = {(gw, stream, seq) for gw, stream, seq, _, _ in rows}
        expect(len(heard) == len(notices), f"{name} heard {len(heard)} of {len(notices)} notices")
        named = {p for *_, p in rows}
        expect(want_pseudonyms <= named,
               f"{name}: the notices do not name the subject by the pseudonyms "
               f"`vernd --pseudonymise` gives with {target}'s key")
    expect(held_erased_before == 0,
           f"consumers still hold {held_erased_before} records of the erased subject "
           f"from before its notice")
    deleted = sum(r.get("records_deleted_by_notices", 0) for r in reports)

    dups = sum(r.get("duplicates", 0) for r in reports)
    replayed = fleet.get("replayed", 0)
    expect(dups >= replayed, f"{replayed} records sent again, {dups} dropped as duplicates")
    if fleet.get("replay_wanted", 0) > 0:
        expect(replayed > 0, "nothing was sent again: the group's de-duplication went untested")
    undecodable = sum(r.get("undecodable", 0) for r in reports)
    expect(undecodable == 0, f"{undecodable} undecodable messages")
    sent = sum(s.get("sent", 0) for s in sims.values())

    f = fleet.get("figures", {})
    # Upstream traffic: messages (Batches) and bytes of the records' messages, notices' copies
    # left out (each consumer gets those on its own subscription).
    msgs = sum(status[g["id"]]["counters"].get("forward_published", 0) for g in gateways)
    nbytes = sum(r.get("bytes", 0) for r in reports)
    by_kind = {}
    for r in reports:
        for k, v in r.get("by_kind", {}).items():
            t = by_kind.setdefault(k, {"messages": 0, "bytes": 0, "records": 0})
            for f_ in t:
                t[f_] += v[f_]
    traffic_s = (arrival[1] - arrival[0]) / 1000 if arrival else 0
    lines = [
        f"vern fleet bench: {len(gateways)} gateways (vernd + site broker + vern-sim each), "
        f"one upstream broker, {len(consumers)} consumers in one shared group "
        + ("(the consumer kit, one shared state file)" if kit else "(each with its own store)"),
        f"  traffic                 {f.get('panels', '?')} panels + {f.get('meters', '?')} meters "
        f"per gateway for {f.get('duration_s', '?')} s",
        f"  events sent             {sent} (all receipted: "
        f"{'yes' if all(s.get('unreceipted', 1) == 0 for s in sims.values()) else 'NO'})",
        f"  records expected        {expected_records} alarm, image and billing records from "
        f"the simulators' events (+ site totals; billing: {total_corrections} of them "
        f"corrections, a reading after its hour had closed)",
        f"  records forwarded       {forwarded} (acknowledged upstream, per vernd's "
        f"forward_delivered), {len(notices)} of them erasure notices",
        f"  upstream messages       {msgs} Batches (forward_published), "
        f"{forwarded / max(msgs, 1):.2f} records per message, "
        f"{nbytes / max(sum(r.get('messages', 0) for r in reports), 1):.0f} bytes per message",
        "  message sizes           " + ", ".join(
            f"{k} {v['bytes'] / v['messages']:.0f} B ({v['records'] / v['messages']:.1f} records)"
            for k, v in sorted(by_kind.items())),
        f"  rates                   {forwarded / max(traffic_s, 1e-9):.0f} records/s, "
        f"{msgs / max(traffic_s, 1e-9):.0f} messages/s upstream over {traffic_s:.1f} s of "
        f"arrivals (first to last record at a consumer)",
        "  records received        "
        + ", ".join(f"{n} {per_consumer[n]}" for n in per_consumer)
        + (f" (+ {len(notices)} notices in the group)" if kit
           else f" (+ {len(notices)} notices each)"),
        f"  accepted twice          {twice}",
        f"  duplicates dropped      {dups}"
        + (f" ({replayed} records of the first alarm messages sent again at the end, as a "
           f"gateway does after a crash: all dropped)" if replayed and dups >= replayed
           else f" ({replayed} sent again)" if replayed else ""),
        f"  lost                    {lost} (sequence numbers missing: {missing_seqs}, "
        f"purged by the erasure: {erasures[target][0] and status[target]['counters'].get('rights_records_purged', 0)})",
        f"  erasure                 on {target}, "
        + {"control": "by the controller's signed command (vern-controller) over the upstream "
                      "broker",
           "admin": "by vernctl on its admin socket"}.get(fleet["erase"].get("via"), "?")
        + "; rights_erasures "
        + ", ".join(f"{gw} {n}" for gw, (n, _) in erasures.items()),
        f"  erasure notices seen    {sum(len({r[:3] for r in rows}) for rows in heard_by.values())}"
        + (" (once by the group: one store)" if kit
           else f" ({len(notices)} per consumer x {len(consumers)})")
        + f"; records deleted by them {deleted}, left from before them {held_erased_before}",
    ]
    print("\n".join(lines))
    if failures:
        print("fleet: FAILED:")
        for w in failures:
            print("  " + w)
        return 1
    print("fleet: ok: every record exactly once after de-duplication, lost 0, erasure on "
          f"{target} only, its notices " + ("taken by the group" if kit else "at every consumer"))
    return 0


def replay(args):
    import paho.mqtt.client as mqtt
    client = mqtt.Client(client_id=f"fleet-replay-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_start()
    infos = []
    records = 0
    with open(args.file) as f:
        for line in f:
            topic, _, hexpayload = line.strip().partition(" ")
            if not topic or not hexpayload:
                continue
            payload = bytes.fromhex(hexpayload)
            records += count_records(payload)
            infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(timeout=30)
    ok = all(info.is_published() for info in infos)
    client.loop_stop()
    client.disconnect()
    print(records)
    return 0 if ok else 1


def count_records(payload):
    """Records in a Batch, without its schema: field 1 (records), length-delimited, counted."""
    n, i = 0, 0
    while i < len(payload):
        key, i = varint(payload, i)
        if key & 7 != 2:
            raise ValueError("not a Batch")
        length, i = varint(payload, i)
        i += length
        n += (key >> 3) == 1
    return n


def varint(b, i):
    v, shift = 0, 0
    while True:
        v |= (b[i] & 0x7F) << shift
        i += 1
        if b[i - 1] < 0x80:
            return v, i
        shift += 7


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--group", default="fleet")
    c.add_argument("--db", required=True)
    c.add_argument("--report", required=True)
    c.add_argument("--proto-py", help="directory holding clean_pb2 (without --kit)")
    c.add_argument("--kit", help="directory holding vern_kit (clients/python, built)")
    r = sub.add_parser("replay")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--file", required=True)
    k = sub.add_parser("check")
    k.add_argument("--run", required=True)
    k.add_argument("--mutate", choices=("lose", "twice", "erase-elsewhere", "notice-missed"),
                   help="break the results first: the check must then fail")
    args = ap.parse_args()
    if args.cmd == "consume":
        return Consumer(args).run()
    if args.cmd == "replay":
        return replay(args)
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
