"""Test helpers: a private mosquitto on a free loopback port, the kit's tools, Batch builders."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import paho.mqtt.client as paho

from vern_kit.proto import clean_pb2

BIN = os.environ.get("VERN_BIN_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "bin"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s=15, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Broker:
    """mosquitto 2 on 127.0.0.1:port, anonymous, no persistence; stopped by close()."""

    def __init__(self, tmp):
        self.port = free_port()
        conf = os.path.join(tmp, f"mosquitto-{self.port}.conf")
        with open(conf, "w") as f:
            f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\nlog_dest stderr\n")
        self.log = open(os.path.join(tmp, f"mosquitto-{self.port}.log"), "w")
        self.proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False
        wait_for(up, 10, "mosquitto")

    def publish(self, topic, payloads, qos=1, retain=False):
        c = paho.Client(protocol=paho.MQTTv311)
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        for p in payloads:
            c.publish(topic, p, qos=qos, retain=retain).wait_for_publish(10)
        c.loop_stop()
        c.disconnect()

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class TempDir:
    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="vern-pykit.")

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    def close(self):
        shutil.rmtree(self.path, ignore_errors=True)


def alarm(gw, stream, seq, **kw):
    r = clean_pb2.Record(gateway=gw, stream=stream, seq=seq, event_time_ms=1_800_000_000_000 + seq,
                         key_epoch=kw.pop("key_epoch", 1))
    r.alarm.kind = clean_pb2.Alarm.INTRUSION
    r.alarm.customer = kw.pop("customer", f"v1.e1.{'c' * 26}")
    for k, v in kw.items():
        setattr(r.alarm, k, v)
    return r


def batch(*records):
    return clean_pb2.Batch(records=list(records)).SerializeToString()


def tool(name):
    return os.path.join(BIN, name)
