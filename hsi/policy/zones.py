"""The policy models of the zone kinds: plain, he (with its CKKS parameters), mpc and tee (with its HSM)."""

from __future__ import annotations

import sys
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from hsi.policy.base import Strict


class CkksParams(Strict):
    """OpenFHE CKKS parameters of an HE zone."""

    ring_dim: int = Field(16384, description="ring dimension N, a power of two")
    scale_bits: int = Field(35, ge=20, le=60)
    first_mod_bits: int = Field(60, ge=30, le=60)
    depth: int = Field(1, ge=1, le=20, description="multiplicative depth")
    security: Literal[128, 192, 256] = 128
    allow_insecure: bool = Field(False, description="permit parameters below the security level (tests only)")

    @field_validator("ring_dim")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 1024 or v & (v - 1):
            raise ValueError(f"ring_dim must be a power of two >= 1024, got {v}")
        return v


class PlainZone(Strict):
    """A PyTorch zone: its host sees everything it computes."""

    kind: Literal["plain"]
    party: str
    port: int = Field(ge=1, le=65535)


class HeZone(Strict):
    """An OpenFHE CKKS zone: its host sees only ciphertexts."""

    kind: Literal["he"]
    party: str
    port: int = Field(ge=1, le=65535)
    ckks: CkksParams = CkksParams()
    key: str = Field("ckks-main", description="handle of the CKKS key at the TEE key service")
    pack_width: int = Field(512, description="features per ciphertext block (a power of two); the rest of the "
                                             "slots hold tokens")
    mask_bits: int = Field(28, ge=8, le=40, description="he->mpc: the HE zone masks a ciphertext with values "
                                                        "uniform in +-2^mask_bits before the enclave decrypts it")
    reshare_mask_bits: int = Field(36, ge=8, le=44, description="mpc->he: the HE host's MPC party masks the "
                                                                "other parties' share with +-2^bits")
    min_hiding_bits: float = Field(20.0, ge=0, description="the plan is refused when a mask hides a tensor "
                                                           "(widened calibrated range) by fewer bits")
    lane_max_tokens: int = Field(4, ge=0, description="tensors of at most this many tokens (each generated "
                                                      "token) use the lane layout: a token's features repeated "
                                                      "in slots/pack_width lanes, each lane working through its "
                                                      "share of the weight diagonals (that many times fewer "
                                                      "multiplies and plaintexts than the token-batched "
                                                      "layout, more rotations per token); 0 turns it off")
    token_width: int | None = Field(None, description="features per ciphertext chunk of a single token (the "
                                                      "complex lane layout of each generated token; a power of "
                                                      "two). Wider: fewer ciphertexts per tensor, so fewer "
                                                      "enclave conversions, more plaintexts. Default: pack_width")
    plaintext_cache_mb: int | None = Field(None, ge=0, description="memory for encoded weight plaintexts (about "
                                                                   "0.4 MB each at N=2^14); layers beyond it are "
                                                                   "encoded during each call, ~5x slower. Default: "
                                                                   "3/4 of the machine's memory")

    @model_validator(mode="after")
    def _mask_fits_modulus(self) -> HeZone:
        # Measured (N=2^14, scale 2^35, first modulus 2^60): a linear layer's output masked with +-2^28
        # decrypts to 1.4e-5; +-2^30 wraps the last modulus. The headroom grows with first_mod - scale.
        limit = self.ckks.first_mod_bits - self.ckks.scale_bits + 3
        if self.mask_bits > limit:
            raise ValueError(f"mask_bits {self.mask_bits} exceeds what the last CKKS modulus holds: at most "
                             f"first_mod_bits - scale_bits + 3 = {limit}")
        return self

    @field_validator("pack_width", "token_width")
    @classmethod
    def _width_power_of_two(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and (v < 1 or v & (v - 1)):
            raise ValueError(f"{info.field_name} must be a power of two, got {v}")
        return v


class MpcMember(Strict):
    """One compute party of an MPC zone."""

    port: int = Field(ge=1, le=65535, description="gRPC port of this party's MPC process")


ENCLAVE_DEALER = "enclave"  # MpcZone.dealer: the dealer runs inside the policy's tee zone


class MpcZone(Strict):
    """A CrypTen zone run by several parties; each sees only its shares."""

    kind: Literal["mpc"]
    parties: dict[str, MpcMember] = Field(description="compute party name -> its process settings, in rank order")
    dealer: str = Field(description="party running the trusted third party for Beaver triples, or `enclave`: "
                                    "inside the policy's tee zone, whose process serves it")
    dealer_port: int = Field(ge=1, le=65535, description="gRPC port of the dealer (at the enclave's party when "
                                                         "`dealer: enclave`)")
    rendezvous_port: int = Field(ge=1, le=65535, description="where rank 0 accepts the others' mutual-TLS links")
    fixed_point_bits: int = Field(16, ge=8, le=32)
    comparisons: Literal["circuit", "dcf"] = Field(
        "circuit", description="how a comparison runs: `circuit`, CrypTen's binary adder (7 rounds, ~800 bytes an "
                               "element between the parties); `dcf`, the dealer's DCF keys (1 round, 16 bytes; "
                               "~1.5 kB an element from the dealer, two parties only)")
    dcf_max_elements: int | None = Field(
        None, ge=1, description="with `comparisons: dcf`, only comparisons of at most this many elements use DCF "
                                "keys, larger ones the circuit (default: every comparison)")
    dcf_pool_elements: int = Field(
        0, ge=0, description="with `comparisons: dcf`, a session that ends deals DCF keys for the zone's next "
                             "session (as many as it used, up to this many; ~800 bytes each at every party), after "
                             "its result went out: the next session's comparisons then wait for no dealer. 0: every "
                             "key is dealt during the request")
    keep_weight_masks_mb: int = Field(
        256, ge=0, description="every party keeps its share of each linear weight's Beaver mask b and the opened W - b "
                               "(the dealer: b) between sessions, for weights up to this many MB at 8 bytes an element "
                               "(a party holds twice that, the dealer once); a later session then opens none of them. "
                               "0: every session opens its weights")
    peer_timeout_s: float = Field(60.0, gt=0, description="a party waiting longer than this for a peer within a "
                                                         "stage gives the session up (a dead or stalled peer)")
    allow_insecure_dealer: bool = Field(False, description="permit the dealer at a compute party (tests only)")
    calibration: str | None = Field(None, description="MPC calibration file (`hsi calibrate`); default: the one "
                                                      "shipped for a packaged model")

    @field_validator("parties")
    @classmethod
    def _at_least_two(cls, v: dict[str, MpcMember]) -> dict[str, MpcMember]:
        if len(v) < 2:
            raise ValueError(f"an MPC zone needs at least 2 compute parties, got {len(v)}")
        return v

    def dcf_limit(self) -> int:
        """The most elements a comparison takes from DCF keys: 0 under `circuit`."""
        if self.comparisons == "circuit":
            return 0
        return self.dcf_max_elements or sys.maxsize

    @model_validator(mode="after")
    def _dcf_for_two(self) -> MpcZone:
        if self.comparisons == "dcf" and len(self.parties) != 2:
            raise ValueError(f"comparisons: dcf takes exactly 2 compute parties, this zone has {len(self.parties)}")
        if self.dcf_pool_elements and self.comparisons != "dcf":
            raise ValueError("dcf_pool_elements deals DCF keys ahead; it needs comparisons: dcf")
        return self


class HsmSettings(Strict):
    """Where the PKCS#11 token holding the platform key and the key-encryption key is."""

    module: str = Field("/usr/lib/softhsm/libsofthsm2.so", description="PKCS#11 module path")
    token_label: str = "hsi-tee"
    pin_env: str = Field("HSI_HSM_PIN", description="environment variable holding the user PIN")
    pin_file: str | None = Field(None, description="file holding the user PIN, used when pin_env is unset")
    softhsm_conf: str | None = Field(None, description="SOFTHSM2_CONF for SoftHSM2 tokens (dev deployments)")


class TeeZone(Strict):
    """A simulated enclave holding every secret key; it may also compute."""

    kind: Literal["tee"]
    party: str
    port: int = Field(ge=1, le=65535)
    measurement: str | None = Field(None, description="expected enclave measurement (hex SHA-256) pinned by clients, "
                                                      "or 'build': the measurement of the enclave code the client "
                                                      "itself has (a reproducible build)")
    platform_key: str | None = Field(None, description="the platform's Ed25519 public key (hex) pinned by clients")
    platform_key_file: str | None = Field(None, description="file holding platform_key (hex), for dev tokens "
                                                            "made by `hsi tee init-token`")
    audit_log: str = Field(".hsi/tee/audit.log", description="hash-chained audit log of the key service")
    hsm: HsmSettings = HsmSettings()
    key_dir: str = Field(".hsi/tee/keys", description="directory of sealed keys")


Zone = Annotated[PlainZone | HeZone | MpcZone | TeeZone, Field(discriminator="kind")]

