"""The test session's SoftHSM2 tokens, and a token's files as `hsi tee init-token` leaves them for an enclave."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hsi.policy import HsmSettings
from zones.tee.hsm import Hsm, HsmConfig, init_softhsm_token

MODULE = HsmSettings().module
# Every SoftHSM2 token the tests use. SoftHSM2 reads SOFTHSM2_CONF once per process (at the first
# C_Initialize), so all tokens live in one directory created before any test loads the library.
TOKENS = {"hsi-test": "1234-test", "hsi-it": "it-pin-1234"}


@dataclass(frozen=True)
class SoftHsm:
    """The test session's SoftHSM2 configuration and token PINs."""

    conf: Path
    pins: dict[str, str]

    def open(self, label: str) -> Hsm:
        """An open session on token `label`."""
        return Hsm(HsmConfig(MODULE, label, self.pins[label]))

    def enclave_files(self, work: Path, label: str = "hsi-it") -> tuple[Path, bytes]:
        """(PIN file, platform public key) of token `label` in `work`: what an enclave's policy points at."""
        pin_file = work / "user.pin"
        pin_file.write_text(self.pins[label])
        hsm = self.open(label)
        try:
            platform = hsm.platform_public_key()  # created in the token on first use; an operator pins it
        finally:
            hsm.close()
        (work / "platform.pub").write_text(platform.hex())
        return pin_file, platform


def init_tokens(directory: Path) -> SoftHsm:
    """Initialise every test token in `directory`; its SoftHSM2 configuration."""
    conf = directory
    for label, pin in TOKENS.items():
        conf = init_softhsm_token(directory, label, pin, "so-" + pin)
    return SoftHsm(conf, dict(TOKENS))
