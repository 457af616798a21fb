"""vern-controller: commands signed (Ed25519 over the context string and the exact bytes) and
their subject sealed (crypto_box_seal) as libsodium checks them; results verified and exports
opened only with the right keys; the tool end to end over a real mosquitto with a stand-in
gateway, printing nothing personal."""
import os
import stat
import subprocess
import unittest

import nacl.public
import nacl.signing
import paho.mqtt.client as paho

from tests.support import Broker, TempDir, tool, wait_for
from vern_kit import controller as ctl
from vern_kit.proto import clean_pb2, control_pb2

IDENTIFIER = "70012345"  # a customer number: must never be printed


class Gateway:
    """A gateway's control keys (derived from its master key in vernd; random here)."""

    def __init__(self):
        self.sign = nacl.signing.SigningKey.generate()
        self.box = nacl.public.PrivateKey.generate()

    def status(self):
        return clean_pb2.GatewayStatus(online=True, time_ms=1, version="0.1.0",
                                       control_box_public_key=bytes(self.box.public_key),
                                       control_sign_public_key=bytes(self.sign.verify_key))


class CommandCrypto(unittest.TestCase):
    def setUp(self):
        self.keys = ctl.Keys.generate()
        self.gw = Gateway()
        self.payload, self.nonce = ctl.make_command(
            self.keys, "gw-a", bytes(self.gw.box.public_key), "erase", "REQ-1", "2026-12-01",
            "customer_number", IDENTIFIER, valid_for_s=300, now_ms=1_800_000_000_000)
        self.public = bytes(self.keys.sign_key.verify_key)

    def test_a_command_verifies_with_the_controllers_key_and_carries_its_fields(self):
        command = ctl.verify_command(self.payload, self.public)
        self.assertIsNotNone(command)
        self.assertEqual((command.version, command.gateway, command.request_id,
                          command.received_date, command.action),
                         (1, "gw-a", "REQ-1", "2026-12-01", control_pb2.ERASE))
        self.assertEqual(command.nonce, self.nonce)
        self.assertTrue(16 <= len(command.nonce) <= 32)
        self.assertEqual(command.expires_ms - command.issued_ms, 300_000)
        again, nonce2 = ctl.make_command(self.keys, "gw-a", bytes(self.gw.box.public_key), "erase",
                                         "REQ-1", "2026-12-01", "customer_number", IDENTIFIER)
        self.assertNotEqual(self.nonce, nonce2)  # random per command

    def test_any_changed_byte_or_another_key_fails_verification(self):
        signed = control_pb2.SignedCommand.FromString(self.payload)
        for i in (0, len(signed.command) // 2, len(signed.command) - 1):
            body = bytearray(signed.command)
            body[i] ^= 0x01
            forged = control_pb2.SignedCommand(command=bytes(body), signature=signed.signature)
            self.assertIsNone(ctl.verify_command(forged.SerializeToString(), self.public), i)
        sig = bytearray(signed.signature)
        sig[10] ^= 0x80
        forged = control_pb2.SignedCommand(command=signed.command, signature=bytes(sig))
        self.assertIsNone(ctl.verify_command(forged.SerializeToString(), self.public))
        other = bytes(nacl.signing.SigningKey.generate().verify_key)
        self.assertIsNone(ctl.verify_command(self.payload, other))
        # the signature covers the context string too: the bare bytes do not verify
        with self.assertRaises(nacl.exceptions.BadSignatureError):
            nacl.signing.VerifyKey(self.public).verify(signed.command, signed.signature)

    def test_the_sealed_subject_opens_only_with_the_gateways_box_key(self):
        command = ctl.verify_command(self.payload, self.public)
        subject = ctl.open_subject(command, bytes(self.gw.box))
        self.assertEqual((subject.kind, subject.identifier), ("customer_number", IDENTIFIER))
        self.assertIsNone(ctl.open_subject(command, bytes(nacl.public.PrivateKey.generate())))
        self.assertIsNone(ctl.open_subject(command, bytes(self.keys.box_key)))  # not even ours
        self.assertNotIn(IDENTIFIER.encode(), self.payload)

    def test_a_result_verifies_only_with_its_gateways_key_and_its_export_opens_only_for_us(self):
        export = nacl.public.SealedBox(self.keys.box_key.public_key).encrypt(b'{"records": []}')
        result = control_pb2.Result(gateway="gw-a", request_id="REQ-1", nonce=self.nonce,
                                    action=control_pb2.EXPORT, status=control_pb2.Result.OK,
                                    sealed_export=bytes(export))
        payload = ctl.sign_result(result, self.gw.sign)
        got = ctl.verify_result(payload, bytes(self.gw.sign.verify_key))
        self.assertEqual(ctl.open_export(got, self.keys), b'{"records": []}')
        self.assertIsNone(ctl.open_export(got, ctl.Keys.generate()))
        self.assertIsNone(ctl.verify_result(payload, bytes(nacl.signing.SigningKey.generate().verify_key)))
        signed = control_pb2.SignedResult.FromString(payload)
        tampered = control_pb2.SignedResult(result=signed.result[:-1] + bytes([signed.result[-1] ^ 1]),
                                            signature=signed.signature)
        self.assertIsNone(ctl.verify_result(tampered.SerializeToString(), bytes(self.gw.sign.verify_key)))

    def test_commands_are_refused_before_signing_when_their_fields_are_bad(self):
        box = bytes(self.gw.box.public_key)
        for bad in (dict(request_id="has space"), dict(received_date="01.12.2026"),
                    dict(action="object"), dict(subject_kind="name"), dict(subject_identifier="")):
            args = dict(keys=self.keys, gateway="gw-a", gateway_box_public=box, action="erase",
                        request_id="R", received_date="2026-12-01", subject_kind="customer_number",
                        subject_identifier=IDENTIFIER)
            args.update(bad)
            with self.assertRaises(ValueError, msg=str(bad)):
                ctl.make_command(**args)


class ControllerTool(unittest.TestCase):
    """keygen, gateways, send, results against a stand-in gateway on a real mosquitto."""

    def setUp(self):
        self.tmp = TempDir()
        self.broker = Broker(self.tmp.path)
        self.keys = self.tmp.join("keys")
        self.printed = []

    def tearDown(self):
        self.broker.close()
        self.tmp.close()

    def run_tool(self, *args, stdin=None, rc=0):
        p = subprocess.run([tool("vern-controller"), *args], input=stdin, capture_output=True,
                           text=True, timeout=60)
        self.printed.append(p.stdout + p.stderr)
        self.assertEqual(p.returncode, rc, p.stdout + p.stderr)
        return p.stdout

    def net(self):
        return ["--keys", self.keys, "-h", "127.0.0.1", "-p", str(self.broker.port)]

    def test_keygen_gateways_send_and_results_round_trip_and_print_nothing_personal(self):
        out = self.run_tool("keygen", "--keys", self.keys)
        for name in ("sign.key", "box.key"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.keys, name)).st_mode), 0o600)
        keys = ctl.Keys.load(self.keys)
        self.assertIn(keys.sign_public_hex, out)
        self.run_tool("keygen", "--keys", self.keys, rc=1)  # never overwritten

        gw, gw_b = Gateway(), Gateway()
        self.broker.publish("vern/v1/gw-a/status", [gw.status().SerializeToString()], retain=True)
        self.broker.publish("vern/v1/gw-b/status", [gw_b.status().SerializeToString()], retain=True)
        self.broker.publish("vern/v1/gw-c/status", [clean_pb2.GatewayStatus(online=True).SerializeToString()],
                            retain=True)  # [control] off
        out = self.run_tool("gateways", *self.net(), "--wait", "1")
        self.assertIn("gw-a online keys registered", out)
        self.assertIn("gw-c online no control keys", out)
        self.assertIn("2 gateways in", out)

        # The stand-in gateway: answers each command it can verify and open.
        received = []

        def on_message(client, userdata, msg):
            g = msg.topic.split("/")[2]
            me = {"gw-a": gw, "gw-b": gw_b}[g]
            command = ctl.verify_command(msg.payload, bytes(keys.sign_key.verify_key))
            subject = ctl.open_subject(command, bytes(me.box))
            received.append((g, command.action, subject.identifier))
            export = b""
            if command.action == control_pb2.EXPORT:
                export = bytes(nacl.public.SealedBox(nacl.public.PublicKey(
                    bytes(keys.box_key.public_key))).encrypt(b'{"subject": "' + subject.identifier.encode() + b'"}'))
            result = control_pb2.Result(gateway=g, request_id=command.request_id, nonce=command.nonce,
                                        action=command.action, status=control_pb2.Result.OK,
                                        records=3, sealed_export=export, message="done")
            client.publish(f"vern/v1/{g}/control/result", ctl.sign_result(result, me.sign), qos=1)

        sub = paho.Client(protocol=paho.MQTTv311)
        sub.on_message = on_message
        sub.connect("127.0.0.1", self.broker.port)
        sub.subscribe("vern/v1/+/control", 1)
        sub.loop_start()
        try:
            subject_file = self.tmp.join("subject")
            with open(subject_file, "w") as f:
                f.write(IDENTIFIER + "\n")
            out = self.run_tool("send", *self.net(), "--all", "--action", "erase", "--request-id",
                                "REQ-7", "--received-date", "2026-12-01", "--subject-file", subject_file)
            self.assertIn("gw-a erase request REQ-7: sent", out)
            self.assertIn("gw-b erase request REQ-7: sent", out)
            self.run_tool("send", *self.net(), "--gateway", "gw-a", "--action", "export",
                          "--request-id", "REQ-8", "--received-date", "2026-12-02",
                          "--subject-file", "-", stdin=IDENTIFIER + "\n")
            self.run_tool("send", *self.net(), "--gateway", "gw-c", "--action", "erase",
                          "--request-id", "R", "--received-date", "2026-12-02",
                          "--subject-file", "-", stdin=IDENTIFIER, rc=2)  # no keys: not registered
            wait_for(lambda: len(received) == 3, 10, "the stand-in gateway's commands")
            # a forged result (another key) is dropped, not counted
            forger = nacl.signing.SigningKey.generate()
            fake = control_pb2.Result(gateway="gw-a", request_id="REQ-X", status=control_pb2.Result.OK)
            sub.publish("vern/v1/gw-a/control/result", ctl.sign_result(fake, forger), qos=1).wait_for_publish(5)
        finally:
            sub.loop_stop()
            sub.disconnect()
        self.assertEqual(sorted(received), [("gw-a", control_pb2.EXPORT, IDENTIFIER),
                                            ("gw-a", control_pb2.ERASE, IDENTIFIER),
                                            ("gw-b", control_pb2.ERASE, IDENTIFIER)])

        # results: published while `results` was not running, kept by the broker for its session
        out = self.run_tool("results", *self.net(), "-W", "3")
        self.assertIn("gw-a erase request REQ-7: OK records=3 (done)", out)
        self.assertIn("gw-b erase request REQ-7: OK records=3 (done)", out)
        self.assertIn("gw-a: result with a bad signature (or for another gateway) dropped", out)
        export = [w.split("=", 1)[1] for w in out.split() if w.startswith("export=")]
        self.assertEqual(len(export), 1, out)
        self.assertEqual(stat.S_IMODE(os.stat(export[0]).st_mode), 0o600)
        with open(export[0]) as f:
            self.assertIn(IDENTIFIER, f.read())
        for text in self.printed:
            self.assertNotIn(IDENTIFIER, text)

    def test_a_gateway_whose_keys_change_keeps_its_registered_keys_until_accepted(self):
        self.run_tool("keygen", "--keys", self.keys)
        first, second = Gateway(), Gateway()
        self.broker.publish("vern/v1/gw-a/status", [first.status().SerializeToString()], retain=True)
        self.run_tool("gateways", *self.net(), "--wait", "1")
        self.broker.publish("vern/v1/gw-a/status", [second.status().SerializeToString()], retain=True)
        out = self.run_tool("gateways", *self.net(), "--wait", "1", rc=3)
        self.assertIn("gw-a online keys CHANGED", out)
        register = ctl.Register(os.path.join(self.keys, "gateways.json"))
        self.assertEqual(register.box_key("gw-a"), bytes(first.box.public_key))
        self.run_tool("gateways", *self.net(), "--wait", "1", "--accept-changed")
        register = ctl.Register(os.path.join(self.keys, "gateways.json"))
        self.assertEqual(register.box_key("gw-a"), bytes(second.box.public_key))


if __name__ == "__main__":
    unittest.main()
