"""The consumer kit: de-duplication by (gateway, stream, seq) kept in SQLite across a restart,
shared-group consumers, erasure notices, pseudonym links across a key-epoch overlap, and the
commit-after-callback rule. Real mosquitto on a free loopback port for the MQTT parts."""
import os
import sqlite3
import stat
import subprocess
import threading
import unittest

from tests.support import Broker, TempDir, alarm, batch, tool, wait_for
from vern_kit.consumer import Consumer, pseudonyms_named
from vern_kit.proto import clean_pb2

TOPIC = "vern/v1/gw-a/alarm/alarm"


def read(path):
    with open(path) as f:
        return f.read()


def seqs(output):
    """The seqs of the record lines vern-consume printed ("gateway stream seq kind time")."""
    return [int(line.split()[2]) for line in output.splitlines() if line.split()[1:2] == ["alarm"]]


class ConsumerOverMqtt(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.broker = Broker(self.tmp.path)

    def tearDown(self):
        self.broker.close()
        self.tmp.close()

    def start(self, state, *extra, name="c", stdout=subprocess.PIPE):
        ready = self.tmp.join(f"{name}.ready")
        if os.path.exists(ready):
            os.remove(ready)
        p = subprocess.Popen([tool("vern-consume"), "-h", "127.0.0.1", "-p", str(self.broker.port),
                              "--state", state, "--ready-file", ready, *extra],
                             stdout=stdout, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: os.path.exists(ready) or p.poll() is not None, 15, "vern-consume ready")
        self.assertIsNone(p.poll(), p.stderr.read() if p.poll() is not None else "")
        return p

    def finish(self, p):
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)
        return out, err

    def test_duplicates_delivered_before_and_after_a_restart_are_dropped(self):
        state = self.tmp.join("backend.db")
        first = self.start(state, "-C", "5")
        self.broker.publish(TOPIC, [batch(*(alarm("gw-a", "alarm", s) for s in (1, 2, 3))),
                                    batch(alarm("gw-a", "alarm", 3), alarm("gw-a", "alarm", 2)),
                                    batch(alarm("gw-a", "alarm", 5)),  # out of order
                                    batch(alarm("gw-a", "alarm", 4))])
        out1, err1 = self.finish(first)
        self.assertEqual(seqs(out1), [1, 2, 3, 5, 4])
        self.assertIn("2 duplicates dropped", err1)

        # While it is down: two repeats and a new record, kept by the broker for its session.
        self.broker.publish(TOPIC, [batch(*(alarm("gw-a", "alarm", s) for s in (4, 5, 6)))])
        second = self.start(state, "-C", "2")
        self.broker.publish(TOPIC, [batch(*(alarm("gw-a", "alarm", s) for s in (1, 6, 7)))])
        out2, err2 = self.finish(second)
        self.assertEqual(seqs(out2), [6, 7])
        self.assertIn("4 duplicates dropped", err2)

        self.assertEqual(stat.S_IMODE(os.stat(state).st_mode), 0o600)  # links are pseudonyms
        # The state is a high-water mark with nothing waiting above it.
        db = sqlite3.connect(state)
        self.assertEqual(db.execute("SELECT high_water, above FROM stream_mark").fetchall(), [(7, 0)])
        self.assertEqual(db.execute("SELECT COUNT(*) FROM seen_above").fetchone()[0], 0)

    def test_consumers_of_one_shared_group_get_each_record_once(self):
        state = self.tmp.join("shared.db")  # one state file: a repeat may reach the other member
        outs = [open(self.tmp.join(f"{m}.out"), "w+") for m in "ab"]
        a = self.start(state, "--group", "backend", "--client-id", "member-a", name="a",
                       stdout=outs[0])
        b = self.start(state, "--group", "backend", "--client-id", "member-b", "--mqtt", "3.1.1",
                       name="b", stdout=outs[1])
        n = 40
        payloads = [batch(alarm("gw-a", "alarm", s)) for s in range(1, n + 1)]
        payloads += [batch(alarm("gw-a", "alarm", s)) for s in range(n, 0, -1)]  # every one again

        self.broker.publish(TOPIC, payloads)
        # Then new records one at a time until each member has handed one on: a member gets its
        # messages in order, so it has handled its share of the repeats by then. Stopped with
        # SIGTERM (they print their summary).
        extra = n

        def both_past_n():
            return all(any(q > n for q in seqs(read(f.name))) for f in outs)
        while not both_past_n():
            self.assertLess(extra, n + 40, "a member handed on none of the records after the repeats")
            extra += 1
            self.broker.publish(TOPIC, [batch(alarm("gw-a", "alarm", extra))])
            try:
                wait_for(both_past_n, 0.5)
            except AssertionError:
                pass
        for p in (a, b):
            p.terminate()
        errs = [self.finish(p)[1] for p in (a, b)]
        got_a, got_b = (seqs(read(f.name)) for f in outs)
        for f in outs:
            f.close()
        self.assertEqual(sorted(got_a + got_b), list(range(1, extra + 1)))
        # "N new records (...), D duplicates dropped": what each member received
        received = [int(e.split()[1]) + int(e.split(" duplicates dropped")[0].split()[-1])
                    for e in errs]
        dropped = [int(e.split(" duplicates dropped")[0].split()[-1]) for e in errs]
        self.assertEqual(sum(dropped), n)
        self.assertEqual(sum(received), n + extra)
        self.assertTrue(all(received), f"the broker did not split the group's messages: {received}")

    def test_a_batch_whose_callback_raised_is_not_acknowledged_and_comes_again(self):
        state, handed = self.tmp.join("flaky.db"), []

        def flaky(record):
            if record.seq == 2 and -2 not in handed:
                handed.append(-2)  # failed once
                raise RuntimeError("backend down")
            handed.append(record.seq)

        ready = threading.Event()
        c = Consumer(state, flaky)
        publisher = threading.Thread(target=lambda: ready.wait(10) and self.broker.publish(
            TOPIC, [batch(*(alarm("gw-a", "alarm", s) for s in (1, 2, 3)))]))
        publisher.start()
        with self.assertRaises(RuntimeError):
            c.run("127.0.0.1", self.broker.port, [TOPIC], on_ready=ready.set, idle_timeout_s=10)
        publisher.join()
        c.close()
        self.assertEqual(handed, [1, -2])
        c = Consumer(state, flaky)  # restarted: the broker sends the unacknowledged batch again
        c.run("127.0.0.1", self.broker.port, [TOPIC], count=2, idle_timeout_s=10)
        self.assertEqual(handed, [1, -2, 2, 3])
        self.assertEqual(c.counts["duplicates"], 1)


class ConsumerCore(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.records, self.erasures, self.links = [], [], []

    def tearDown(self):
        self.tmp.close()

    def consumer(self, name="core.db", window=65536):
        return Consumer(self.tmp.join(name), self.records.append, self.erasures.append,
                        self.links.append, window=window)

    def test_an_erasure_notice_goes_to_the_erasure_callback_with_every_pseudonym_it_names(self):
        c = self.consumer()
        notice = clean_pb2.Record(gateway="gw-a", stream="alarm", seq=2, key_epoch=2,
                                  previous_key_epoch=1)
        notice.erasure.customer = "v1.e2." + "n" * 26
        notice.erasure.erased_ms = 1_800_000_000_000
        notice.previous.customer = "v1.e1." + "o" * 26
        self.assertEqual(c.handle_payload(batch(alarm("gw-a", "alarm", 1), notice),
                                          "vern/v1/gw-a/alarm/notice"), 2)
        self.assertEqual([r.seq for r in self.records], [1])
        self.assertEqual([r.seq for r in self.erasures], [2])
        self.assertEqual(pseudonyms_named(self.erasures[0]),
                         ["v1.e2." + "n" * 26, "v1.e1." + "o" * 26])
        c.handle_payload(batch(notice), "vern/v1/gw-a/alarm/notice")  # a repeat
        self.assertEqual(len(self.erasures), 1)
        self.assertEqual(c.counts["erasures"], 1)

    def test_records_in_an_epoch_overlap_link_old_to_new_pseudonyms_once_and_for_good(self):
        c = self.consumer()
        old, new = "v1.e1." + "a" * 26, "v1.e2." + "b" * 26
        r = alarm("gw-a", "alarm", 1, key_epoch=2, customer=new, event_id="v1.e2." + "e" * 26)
        r.previous_key_epoch = 1
        r.previous.customer = old
        r.previous.event_id = "v1.e1." + "f" * 26
        r2 = alarm("gw-a", "alarm", 2, key_epoch=2, customer=new)
        r2.previous_key_epoch = 1
        r2.previous.customer = old
        c.handle_payload(batch(r, r2))
        self.assertEqual(sorted((l.kind, l.old_epoch, l.new_epoch) for l in self.links),
                         [("customer", 1, 2), ("event_id", 1, 2)])
        c.close()
        c = self.consumer()  # reopened: the pairs are in SQLite
        self.assertEqual(c.current("alarm", old), new)
        self.assertEqual(c.previous("alarm", new), old)
        self.assertIsNone(c.current("billing", old))  # pseudonyms are per stream
        self.assertIsNone(c.current("alarm", new))

    def test_a_record_is_marked_seen_only_after_its_callback_returned(self):
        calls = []

        def flaky(record):
            calls.append(record.seq)
            if record.seq == 2 and calls.count(2) == 1:
                raise RuntimeError("backend down")

        c = Consumer(self.tmp.join("flaky.db"), flaky)
        payload = batch(*(alarm("gw-a", "alarm", s) for s in (1, 2, 3)))
        with self.assertRaises(RuntimeError):
            c.handle_payload(payload)
        self.assertTrue(c.seen.seen("gw-a", "alarm", 1))
        self.assertFalse(c.seen.seen("gw-a", "alarm", 2))
        c.close()
        c = Consumer(self.tmp.join("flaky.db"), flaky)  # the broker delivers the batch again
        self.assertEqual(c.handle_payload(payload), 2)
        self.assertEqual(calls, [1, 2, 2, 3])

    def test_the_seen_window_is_bounded_and_gives_up_the_oldest_gap(self):
        c = self.consumer(window=4)
        # seq 1 never comes (evicted at the gateway); 2..6 arrive
        for s in (2, 3, 4, 5):
            c.handle_payload(batch(alarm("gw-a", "alarm", s)))
        self.assertEqual((c.seen.high_water("gw-a", "alarm"), c.seen.waiting_above("gw-a", "alarm")),
                         (0, 4))
        c.handle_payload(batch(alarm("gw-a", "alarm", 7)))  # five waiting: the gap at 1 is given up
        self.assertEqual((c.seen.high_water("gw-a", "alarm"), c.seen.waiting_above("gw-a", "alarm")),
                         (5, 1))
        self.assertEqual(c.seen.gaps_given_up, 1)
        c.handle_payload(batch(alarm("gw-a", "alarm", 6)))  # fills the last gap
        self.assertEqual((c.seen.high_water("gw-a", "alarm"), c.seen.waiting_above("gw-a", "alarm")),
                         (7, 0))
        self.assertEqual([r.seq for r in self.records], [2, 3, 4, 5, 7, 6])

    def test_status_and_undecodable_messages_are_skipped_not_handed_on(self):
        c = self.consumer()
        status = clean_pb2.GatewayStatus(online=True).SerializeToString()
        self.assertEqual(c.handle_payload(status, "vern/v1/gw-a/status"), 0)
        self.assertEqual(c.handle_payload(b"\xff\xff\xff", "vern/v1/gw-a/alarm/alarm"), 0)
        self.assertEqual(self.records, [])
        self.assertEqual((c.counts["not_a_stream"], c.counts["undecodable"]), (1, 1))


if __name__ == "__main__":
    unittest.main()
