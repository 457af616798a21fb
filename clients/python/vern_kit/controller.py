"""The controller's side of the control channel (proto/control.proto), with PyNaCl (libsodium):
Ed25519 detached signatures (crypto_sign_detached) and sealed boxes (crypto_box_seal).

Keys on disk: a directory with sign.key and box.key (the 32-byte Ed25519 seed and X25519 secret
key, hex, mode 0600), sign.pub and box.pub (hex). A gateway's public keys come from its retained
GatewayStatus (vernd --print-control-keys prints them on the box, to compare out of band).
"""

import datetime
import json
import os
import re
import secrets
import time

import nacl.exceptions
import nacl.public
import nacl.signing

from .proto import clean_pb2, control_pb2

COMMAND_CONTEXT = b"vern.control.v1.command\n"
RESULT_CONTEXT = b"vern.control.v1.result\n"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
ACTIONS = {
    "export": control_pb2.EXPORT, "erase": control_pb2.ERASE, "restrict": control_pb2.RESTRICT,
    "unrestrict": control_pb2.UNRESTRICT, "object": control_pb2.OBJECT,
    "unobject": control_pb2.UNOBJECT, "consent-grant": control_pb2.CONSENT_GRANT,
    "consent-withdraw": control_pb2.CONSENT_WITHDRAW,
}
NEEDS_PURPOSE = {"object", "unobject", "consent-grant", "consent-withdraw"}
SUBJECT_KINDS = ("customer_number", "panel_user", "meter_point")


def write_secret(path, data):
    """Creates a file readable by its owner only (0600); refuses to overwrite one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class Keys:
    """The controller's two key pairs."""

    def __init__(self, sign_key, box_key):
        self.sign_key = sign_key  # nacl.signing.SigningKey
        self.box_key = box_key    # nacl.public.PrivateKey

    @classmethod
    def generate(cls):
        return cls(nacl.signing.SigningKey.generate(), nacl.public.PrivateKey.generate())

    def save(self, directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for name in ("sign.key", "box.key", "sign.pub", "box.pub"):
            if os.path.exists(os.path.join(directory, name)):
                raise FileExistsError(f"{os.path.join(directory, name)} exists: keys are never overwritten")
        write_secret(os.path.join(directory, "sign.key"), bytes(self.sign_key).hex().encode() + b"\n")
        write_secret(os.path.join(directory, "box.key"), bytes(self.box_key).hex().encode() + b"\n")
        with open(os.path.join(directory, "sign.pub"), "w") as f:
            f.write(self.sign_public_hex + "\n")
        with open(os.path.join(directory, "box.pub"), "w") as f:
            f.write(self.box_public_hex + "\n")

    @classmethod
    def load(cls, directory):
        def secret(name):
            path = os.path.join(directory, name)
            st = os.stat(path)
            if st.st_mode & 0o077:
                raise PermissionError(f"{path} may be read by group or others: chmod 600 it")
            with open(path) as f:
                return bytes.fromhex(f.read().strip())
        return cls(nacl.signing.SigningKey(secret("sign.key")),
                   nacl.public.PrivateKey(secret("box.key")))

    @property
    def sign_public_hex(self):
        return bytes(self.sign_key.verify_key).hex()

    @property
    def box_public_hex(self):
        return bytes(self.box_key.public_key).hex()


def make_command(keys, gateway, gateway_box_public, action, request_id, received_date,
                 subject_kind, subject_identifier, purpose="", valid_for_s=86400, now_ms=None,
                 nonce=None):
    """A SignedCommand (serialized) for one gateway, and its nonce."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    if not REQUEST_ID.match(request_id):
        raise ValueError("request id must be 1 to 64 of A-Z a-z 0-9 . _ : -")
    datetime.date.fromisoformat(received_date)  # ValueError unless YYYY-MM-DD
    if action in NEEDS_PURPOSE and not purpose:
        raise ValueError(f"{action} needs --purpose")
    if subject_kind not in SUBJECT_KINDS:
        raise ValueError(f"subject kind must be one of {', '.join(SUBJECT_KINDS)}")
    if not subject_identifier:
        raise ValueError("empty subject identifier")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    nonce = nonce or secrets.token_bytes(24)
    subject = control_pb2.Subject(kind=subject_kind, identifier=subject_identifier)
    sealed = nacl.public.SealedBox(nacl.public.PublicKey(gateway_box_public)).encrypt(
        subject.SerializeToString())
    command = control_pb2.Command(
        version=1, gateway=gateway, request_id=request_id, received_date=received_date,
        nonce=nonce, issued_ms=now_ms, expires_ms=now_ms + int(valid_for_s * 1000),
        action=ACTIONS[action], purpose=purpose, sealed_subject=bytes(sealed))
    body = command.SerializeToString()
    signature = keys.sign_key.sign(COMMAND_CONTEXT + body).signature
    return control_pb2.SignedCommand(command=body, signature=signature).SerializeToString(), nonce


def verify_command(payload, sign_public):
    """The gateway's check, for tests: the Command if the signature verifies, else None."""
    signed = control_pb2.SignedCommand.FromString(payload)
    try:
        nacl.signing.VerifyKey(sign_public).verify(COMMAND_CONTEXT + signed.command,
                                                   signed.signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return None
    return control_pb2.Command.FromString(signed.command)


def open_subject(command, box_secret):
    """The gateway's side, for tests: the Subject, or None if it does not open with this key."""
    try:
        plain = nacl.public.SealedBox(nacl.public.PrivateKey(box_secret)).decrypt(
            command.sealed_subject)
    except nacl.exceptions.CryptoError:
        return None
    return control_pb2.Subject.FromString(plain)


def sign_result(result, sign_key):
    """The gateway's side, for tests: a SignedResult (serialized)."""
    body = result.SerializeToString()
    return control_pb2.SignedResult(
        result=body, signature=sign_key.sign(RESULT_CONTEXT + body).signature).SerializeToString()


def verify_result(payload, gateway_sign_public):
    """The Result if its signature verifies with the gateway's key, else None."""
    try:
        signed = control_pb2.SignedResult.FromString(payload)
        nacl.signing.VerifyKey(gateway_sign_public).verify(RESULT_CONTEXT + signed.result,
                                                           signed.signature)
        return control_pb2.Result.FromString(signed.result)
    except Exception:  # bad signature, wrong key length, undecodable: all the same to us
        return None


def open_export(result, keys):
    """The export's plaintext (bytes), or None if it does not open with the controller's key."""
    try:
        return nacl.public.SealedBox(keys.box_key).decrypt(result.sealed_export)
    except nacl.exceptions.CryptoError:
        return None


def status_name(status):
    return control_pb2.Result.Status.Name(status)


def action_name(action):
    return control_pb2.Action.Name(action)


class Register:
    """Gateways' public control keys (JSON file), trust on first use: a key that changes is not
    taken over unless asked (a broker's operator could publish a status of its own)."""

    def __init__(self, path):
        self.path = path
        self.gateways = {}
        if os.path.exists(path):
            with open(path) as f:
                self.gateways = json.load(f)

    def update(self, gateway, status, accept_changed=False):
        """Returns "new", "same", "changed" (kept the old one), "replaced" or "no keys"."""
        box, sign = status.control_box_public_key, status.control_sign_public_key
        if len(box) != 32 or len(sign) != 32:
            return "no keys"
        entry = {"box": box.hex(), "sign": sign.hex(), "version": status.version}
        old = self.gateways.get(gateway)
        if old is None:
            self.gateways[gateway] = entry
            return "new"
        if old["box"] == entry["box"] and old["sign"] == entry["sign"]:
            old["version"] = status.version
            return "same"
        if not accept_changed:
            return "changed"
        self.gateways[gateway] = entry
        return "replaced"

    def box_key(self, gateway):
        return bytes.fromhex(self.gateways[gateway]["box"])

    def sign_key(self, gateway):
        return bytes.fromhex(self.gateways[gateway]["sign"])

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.gateways, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.path)


def parse_status(payload):
    try:
        return clean_pb2.GatewayStatus.FromString(payload)
    except Exception:
        return None
