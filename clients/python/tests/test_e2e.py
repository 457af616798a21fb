"""Against a real vernd: vern-controller with [control] (keygen, the gateway's keys from its
retained status, an erasure and an export sent, signed results back, the export opened and
written 0600, a replay refused; nothing personal printed), and the consumer kit's epoch links
during a key rotation's overlap, checked against vernd's own pseudonyms. Real mosquitto brokers
(site and upstream) on free loopback ports."""
import json
import os
import stat
import subprocess
import time
import unittest

import paho.mqtt.client as paho

from tests import device_pb2
from tests.support import BIN, Broker, TempDir, tool, wait_for
from vern_kit import controller as ctl
from vern_kit.consumer import Consumer

IDENTIFIER = "70012345"  # a customer number: never printed


class AgainstVernd(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.site = Broker(self.tmp.path)
        self.upstream = Broker(self.tmp.path)
        self.keys = self.tmp.join("ctl")
        self.printed = []
        self.vernd = None

    def tearDown(self):
        if self.vernd:
            self.vernd.terminate()
            self.vernd.wait(20)
            self.vernd_log.close()
        self.site.close()
        self.upstream.close()
        self.tmp.close()

    def run_tool(self, *args, stdin=None, rc=0):
        p = subprocess.run([tool("vern-controller"), *args], input=stdin, capture_output=True,
                           text=True, timeout=90)
        self.printed.append(p.stdout + p.stderr)
        self.assertEqual(p.returncode, rc, p.stdout + p.stderr)
        return p.stdout

    def net(self):
        return ["--keys", self.keys, "-h", "127.0.0.1", "-p", str(self.upstream.port)]

    def start_vernd(self, control):
        config = self.tmp.join("vernd.toml")
        with open(config, "w") as f:
            f.write(f'[gateway]\nid = "gw-e2e"\n\n'
                    f'[site_broker]\nuri = "tcp://127.0.0.1:{self.site.port}"\n\n'
                    f'[upstream]\nuri = "tcp://127.0.0.1:{self.upstream.port}"\n\n'
                    f'[admin]\ntechnician_uids = [{os.getuid()}]\n\n{control}')
        self.vernd_log = open(self.tmp.join("vernd.log"), "w")
        self.vernd = subprocess.Popen([os.path.join(BIN, "vernd"), "--config", config],
                                      cwd=self.tmp.path, stdout=self.vernd_log,
                                      stderr=subprocess.STDOUT)
        status = self.tmp.join("var", "status.json")

        def up():
            try:
                with open(status) as f:
                    s = json.load(f)
                return s["upstream"]["connected"] and s["site_broker"]["connected"]
            except (OSError, ValueError, KeyError):
                return False
        wait_for(up, 30, "vernd connected to both brokers")

    def start_consumer(self):
        """vern-consume on the gateway's alarm stream: its process and a reader of its lines."""
        consumed = self.tmp.join("consumed.out")
        ready = self.tmp.join("consumer.ready")
        with open(consumed, "w") as out_file:
            consumer = subprocess.Popen(
                [tool("vern-consume"), "-h", "127.0.0.1", "-p", str(self.upstream.port),
                 "--gateway", "gw-e2e", "--stream", "alarm", "--state", self.tmp.join("backend.db"),
                 "--ready-file", ready], stdout=out_file, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: consumer.poll() is None and consumer.kill())
        wait_for(lambda: os.path.exists(ready), 15, "vern-consume subscribed")

        def consumed_lines():
            with open(consumed) as f:
                return f.read().splitlines()
        return consumer, consumed_lines

    def send_alarm(self, seq):
        """One panel alarm about the subject, on the site broker as a panel sends it."""
        event = device_pb2.DeviceMessage(device_id="panel-e2e", seq=seq,
                                         event_time_ms=int(time.time() * 1000))
        event.alarm.kind = device_pb2.AlarmEvent.ARM
        event.alarm.event_id = f"ev-{seq}"
        event.alarm.customer_number = IDENTIFIER
        event.alarm.user_slot = 1
        self.site.publish("dev/v1/site-1/panel-e2e/alarm", [event.SerializeToString()])

    def pseudonym(self, config):
        """vernd --pseudonymise of the subject for the alarm purpose, with that config's epoch."""
        p = subprocess.run([os.path.join(BIN, "vernd"), "--config", config, "--pseudonymise",
                            "customer_number", "--purpose", "alarm"], cwd=self.tmp.path,
                           input=IDENTIFIER + "\n", capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    def test_the_kit_links_a_real_gateways_pseudonyms_across_a_key_epoch_overlap(self):
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
        rotation = (f"[keys]\npseudonym_epoch = 2\npseudonym_epoch_start = {start}\n"
                    "pseudonym_overlap_h = 24\n")
        self.start_vernd(rotation)
        consumer, consumed_lines = self.start_consumer()
        self.send_alarm(1)
        wait_for(lambda: any(" alarm 1 alarm " in l for l in consumed_lines()), 30,
                 "the alarm at the backend")
        consumer.terminate()
        _, summary = consumer.communicate(timeout=20)
        self.assertIn("epoch_link customer e1->e2", "\n".join(consumed_lines()))
        self.assertIn("epoch_link event_id e1->e2", "\n".join(consumed_lines()))

        # The pair is the subject's epoch-1 pseudonym and its epoch-2 one, as vernd makes them.
        new = self.pseudonym(self.tmp.join("vernd.toml"))
        epoch1 = self.tmp.join("epoch1.toml")
        with open(self.tmp.join("vernd.toml")) as f, open(epoch1, "w") as g:
            g.write(f.read().replace(rotation, ""))
        old = self.pseudonym(epoch1)
        self.assertRegex(new, r"^v1\.e2\.[a-z2-7]{26}$")
        self.assertRegex(old, r"^v1\.e1\.[a-z2-7]{26}$")
        kit = Consumer(self.tmp.join("backend.db"), lambda r: None)
        self.assertEqual(kit.current("alarm", old), new)
        self.assertEqual(kit.previous("alarm", new), old)
        kit.close()
        for text in consumed_lines() + [summary]:
            self.assertNotIn("v1.e", text)  # vern-consume prints no pseudonym

    def test_keygen_gateways_send_erase_and_export_and_results_against_vernd(self):
        out = self.run_tool("keygen", "--keys", self.keys)
        control = out[out.index("[control]"):]  # the section keygen prints, as it prints it
        self.start_vernd(control)

        # A backend on the kit, and one panel alarm about the subject through the gateway.
        consumer, consumed_lines = self.start_consumer()
        self.send_alarm(1)
        wait_for(lambda: any(" alarm 1 alarm " in l for l in consumed_lines()), 30,
                 "the alarm at the backend")

        out = self.run_tool("gateways", *self.net(), "--wait", "2")
        self.assertIn("gw-e2e online keys registered", out)
        keys_on_box = subprocess.run([os.path.join(BIN, "vernd"), "--print-control-keys"],
                                     cwd=self.tmp.path, capture_output=True, text=True, timeout=30)
        register = ctl.Register(os.path.join(self.keys, "gateways.json"))
        self.assertIn(register.gateways["gw-e2e"]["box"], keys_on_box.stdout + keys_on_box.stderr)

        self.captured = []
        tap = paho.Client(protocol=paho.MQTTv311)
        subscribed = []
        tap.on_message = lambda client, userdata, msg: self.captured.append(msg.payload)
        tap.on_subscribe = lambda *args: subscribed.append(1)
        tap.connect("127.0.0.1", self.upstream.port)
        tap.subscribe("vern/v1/gw-e2e/control", 1)
        tap.loop_start()
        self.addCleanup(tap.loop_stop)
        wait_for(lambda: subscribed, 10, "SUBACK")
        self.run_tool("send", *self.net(), "--gateway", "gw-e2e", "--action", "erase",
                      "--request-id", "E2E-ERASE-1", "--received-date", "2026-12-01",
                      "--subject-file", "-", stdin=IDENTIFIER + "\n")
        out = self.run_tool("results", *self.net(), "-C", "1", "-W", "30")
        self.assertRegex(out, r"gw-e2e erase request E2E-ERASE-1: OK records=\d+")
        # the gateway's erasure notice reaches the backend's erasure callback
        wait_for(lambda: any(l.startswith("gw-e2e alarm ") and " erasure " in l
                             for l in consumed_lines()), 30, "the erasure notice at the backend")

        self.run_tool("send", *self.net(), "--gateway", "gw-e2e", "--action", "export",
                      "--request-id", "E2E-EXPORT-1", "--received-date", "2026-12-01",
                      "--subject-file", "-", stdin=IDENTIFIER + "\n")
        out = self.run_tool("results", *self.net(), "-C", "1", "-W", "30")
        self.assertRegex(out, r"gw-e2e export request E2E-EXPORT-1: OK records=\d+ export=")
        path = [w.split("=", 1)[1] for w in out.split() if w.startswith("export=")][0]
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            json.load(f)  # the report, opened with the controller's key

        # the erasure's command again, as a broker or an eavesdropper could: refused (its nonce)
        self.upstream.publish("vern/v1/gw-e2e/control", [self.captured[0]])
        out = self.run_tool("results", *self.net(), "-C", "1", "-W", "30")
        self.assertIn("gw-e2e erase request E2E-ERASE-1: REFUSED_REPLAY", out)

        consumer.terminate()
        _, summary = consumer.communicate(timeout=20)
        self.assertIn("(1 erasure notices)", summary)
        self.printed += consumed_lines() + [summary]
        for text in self.printed:
            self.assertNotIn(IDENTIFIER, text)
        with open(self.tmp.join("vernd.log")) as f:
            self.assertNotIn(IDENTIFIER, f.read())
        with open(self.tmp.join("backend.db"), "rb") as f:
            self.assertNotIn(IDENTIFIER.encode(), f.read())


if __name__ == "__main__":
    unittest.main()
