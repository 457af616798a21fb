"""One way to connect with Debian 12's paho-mqtt (1.6): MQTT 5 or 3.1.1, a persistent session
when a client id is given (the broker keeps QoS 1 messages for it while it is away), and a loop
that reconnects with backoff and lets an exception from a callback end it before the message's
PUBACK is sent (paho acknowledges a QoS 1 message only after on_message returned)."""

import random
import time

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

PROTOCOLS = {"5": paho.MQTTv5, "3.1.1": paho.MQTTv311, "311": paho.MQTTv311}


class Connection:
    """A paho client with its subscriptions re-made on every connect.

    client_id: fixed for a persistent session (clean_session False / clean_start False with a
    session expiry), None for a throw-away one."""

    def __init__(self, host, port, client_id=None, protocol="5", session_expiry_s=86400,
                 keepalive=30):
        self.protocol = PROTOCOLS[str(protocol)]
        self.host, self.port, self.keepalive = host, int(port), keepalive
        self.persistent = bool(client_id)
        self.session_expiry_s = session_expiry_s
        if self.protocol == paho.MQTTv5:
            self.client = paho.Client(client_id=client_id or "", protocol=self.protocol)
        else:
            self.client = paho.Client(client_id=client_id or "", protocol=self.protocol,
                                      clean_session=not self.persistent)
        self.subscriptions = []  # (topic filter, qos)
        self.connected = False
        self.connect_error = None
        self.pending_subacks = set()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        code = rc.value if hasattr(rc, "value") else rc
        if code != 0:
            self.connect_error = str(rc)
            return
        self.connected = True
        for topic, qos in self.subscriptions:
            self.pending_subacks.add(client.subscribe(topic, qos)[1])

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        self.pending_subacks.discard(mid)

    def _on_disconnect(self, client, userdata, rc, properties=None):
        self.connected = False

    def connect(self, timeout_s=10):
        """Connects and waits for CONNACK and the SUBACKs of the subscriptions made so far (a
        message published after connect() returned reaches them); raises ConnectionError."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.protocol == paho.MQTTv5:
                    props = Properties(PacketTypes.CONNECT)
                    props.SessionExpiryInterval = self.session_expiry_s if self.persistent else 0
                    self.client.connect(self.host, self.port, self.keepalive,
                                        clean_start=not self.persistent, properties=props)
                else:
                    self.client.connect(self.host, self.port, self.keepalive)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"cannot reach {self.host}:{self.port}: {e}") from e
                time.sleep(0.2)
        while not self.connected:
            self.client.loop(timeout=0.1)
            if self.connect_error:
                raise ConnectionError(f"broker refused the connection: {self.connect_error}")
            if time.monotonic() > deadline:
                raise ConnectionError(f"no CONNACK from {self.host}:{self.port}")
        while self.pending_subacks:
            self.client.loop(timeout=0.1)
            if time.monotonic() > deadline:
                raise ConnectionError(f"no SUBACK from {self.host}:{self.port}")

    def subscribe(self, topic, qos=1):
        """Subscribes now if connected, and on every (re)connect; call before connect()."""
        self.subscriptions.append((topic, qos))
        if self.connected:
            self.pending_subacks.add(self.client.subscribe(topic, qos)[1])

    def loop(self, until, timeout_s=None):
        """Runs the network loop until until() is true or timeout_s passed; reconnects with
        backoff (0.2 s doubling to 5 s, jittered). Returns True if until() became true."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        backoff = 0.2
        while not until():
            if deadline is not None and time.monotonic() > deadline:
                return False
            rc = self.client.loop(timeout=0.1)
            if rc == paho.MQTT_ERR_SUCCESS:
                backoff = 0.2
                continue
            time.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, 5.0)
            try:
                self.client.reconnect()
            except OSError:
                pass
        return True

    def publish(self, topic, payload, qos=1, timeout_s=10):
        """Publishes and waits for the broker's PUBACK (QoS 1); raises TimeoutError."""
        info = self.client.publish(topic, payload, qos=qos)
        deadline = time.monotonic() + timeout_s
        while not info.is_published():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no PUBACK for {topic}")
            self.client.loop(timeout=0.1)

    def close(self):
        try:
            self.client.disconnect()
            self.client.loop(timeout=0.1)
        except Exception:  # already gone
            pass
