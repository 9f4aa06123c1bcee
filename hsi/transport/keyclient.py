"""Client of a tee zone's KeyService: attest first, then use keys by handle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc

from hsi.errors import HsiError
from hsi.policy import Policy, TeeZone
from hsi.transport.attestation import NONCE_BYTES, AttestationError, Quote, QuoteVerifier
from hsi.transport.certs import certs_dir, load_credentials
from hsi.transport.material import unbundle
from hsi.transport.server import secure_channel
from hsi.transport.stream import receive
from protos import keys_pb2 as kpb
from protos import keys_pb2_grpc


class KeyServiceError(HsiError, RuntimeError):
    """A refused or failed key-service call; the message carries the status and the service's reason."""


def pinned(spec: TeeZone, zone: str) -> tuple[bytes, bytes]:
    """(measurement, platform public key) a client expects of the tee zone, from the policy's pins."""
    measurement, platform = spec.measurement, spec.platform_key
    if measurement == "build":
        from hsi.transport.attestation import measurement as build_measurement

        measurement = build_measurement().hex()
    if platform is None and spec.platform_key_file:
        try:
            platform = Path(spec.platform_key_file).read_text().strip()
        except OSError as e:
            raise AttestationError(f"zone {zone!r}: cannot read platform_key_file {spec.platform_key_file}: "
                                   f"{e.strerror}") from None
    if not measurement or not platform:
        raise AttestationError(f"zone {zone!r} pins no measurement/platform_key in the policy; run "
                               "`hsi keys attest --no-verify` and pin the values it prints")
    try:
        return bytes.fromhex(measurement), bytes.fromhex(platform)
    except ValueError:
        raise AttestationError(f"zone {zone!r}: the pinned measurement and platform key must be hex") from None


class KeyClient:
    """Talks to the key service of `zone` as `principal` (from its certificate)."""

    def __init__(self, policy: Policy, zone: str, principal: str) -> None:
        z = policy.zones.get(zone)
        if not isinstance(z, TeeZone):
            raise KeyServiceError(f"policy {policy.name!r} has no tee zone {zone!r}")
        self.policy, self.zone, self.spec = policy, zone, z
        creds = load_credentials(certs_dir(policy), principal)
        self._channel = secure_channel(creds, policy.zone_endpoints(zone)[z.party], policy.transport.max_message_bytes)
        self.stub = keys_pb2_grpc.KeyServiceStub(self._channel)
        self.timeout = policy.transport.deadlines.rpc_s
        self.attested = False

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise KeyServiceError(f"{method} refused: {e.code().name}: {e.details()}") from None

    def attest(self, pin: bool = True) -> Quote:
        """Fetch a quote for a fresh nonce and, when `pin`, verify it against the policy's pinned values."""
        nonce = os.urandom(NONCE_BYTES)
        r = self._call("Attest", kpb.AttestRequest(nonce=nonce))
        quote = Quote(r.measurement, r.enclave_public_key, r.nonce, r.unix_time, r.signature, r.simulated)
        if pin:
            QuoteVerifier(*pinned(self.spec, self.zone)).verify(quote, nonce)
            self.attested = True
        self.platform_key = bytes(r.platform_public_key)
        return quote

    def create(self, key: str, ring_dim: int, scale_bits: int, first_mod_bits: int, depth: int) -> Any:
        """Create a key in the enclave."""
        return self._call("CreateKey", kpb.CreateKeyRequest(key=key, ring_dim=ring_dim, scale_bits=scale_bits,
                                                            first_mod_bits=first_mod_bits, depth=depth))

    def public_material(self, key: str, rotations: list[int]) -> tuple[bytes, dict[str, str]]:
        """(bundle, meta) of a key's public material, after attesting the enclave."""
        if not self.attested:
            self.attest()
        stream = self.stub.GetPublicMaterial(kpb.PublicMaterialRequest(key=key, rotations=rotations),
                                             timeout=self.timeout * 4)
        try:
            got = receive(stream, self.policy.transport.max_tensor_bytes, self.policy.transport.chunk_bytes)
        except grpc.RpcError as e:
            raise KeyServiceError(f"GetPublicMaterial refused: {e.code().name}: {e.details()}") from None
        unbundle(got.data, dict(got.header.meta))  # validates the layout
        return got.data, dict(got.header.meta)

    def rotate(self, key: str) -> Any:
        """Rotate a key."""
        return self._call("Rotate", kpb.KeyRequest(key=key))

    def destroy(self, key: str) -> Any:
        """Destroy a key."""
        return self._call("Destroy", kpb.KeyRequest(key=key))

    def list(self) -> list[Any]:
        """Metadata of every key."""
        return list(self._call("ListKeys", kpb.ListKeysRequest()).keys)

    def sign_receipt(self, session: str, digest: bytes) -> Any:
        """The platform key's signature over a receipt digest, after attesting the enclave."""
        if not self.attested:
            self.attest()
        return self._call("SignReceipt", kpb.SignReceiptRequest(session=session, digest=digest))


def fetch_public_material(policy: Policy, principal: str, key: str,
                          rotations: list[int]) -> tuple[bytes, dict[str, str], str]:
    """(bundle, meta, tee zone) of `key`'s public material from the policy's tee zone, as `principal`, after
    attesting the enclave; KeyServiceError when there is no tee zone or the call is refused, AttestationError
    when the quote does not verify."""
    tees = list(policy.zones_of(TeeZone))
    if not tees:
        raise KeyServiceError(f"policy {policy.name!r} has no tee zone to take key {key!r} from")
    client = KeyClient(policy, tees[0], principal)
    try:
        data, meta = client.public_material(key, rotations)
    except (KeyServiceError, AttestationError) as e:
        raise type(e)(f"tee zone {tees[0]!r}: {e}") from None
    finally:
        client.close()
    return data, meta, tees[0]


def attest_enclave(policy: Policy, zone: str, principal: str) -> None:
    """Verify tee zone `zone`'s quote against the policy's pins before sending it plaintext, as `principal`;
    KeyServiceError or AttestationError (naming the zone) when it does not verify."""
    client = KeyClient(policy, zone, principal)
    try:
        client.attest()
    except (KeyServiceError, AttestationError) as e:
        raise type(e)(f"tee zone {zone!r}: {e}") from None
    finally:
        client.close()
