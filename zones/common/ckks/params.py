"""CKKS contexts from policy parameters, refusing parameters below the requested security level."""

from __future__ import annotations

from dataclasses import dataclass

import openfhe as fhe

from hsi.policy import CkksParams

# HE standard (homomorphicencryption.org, 2018), ternary secrets: the largest log2(Q·P)
# a ring dimension admits at each classical security level.
MAX_LOG_QP = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881, 65536: 1747},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611, 65536: 1228},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476, 65536: 956},
}
_LEVEL = {128: fhe.SecurityLevel.HEStd_128_classic, 192: fhe.SecurityLevel.HEStd_192_classic,
          256: fhe.SecurityLevel.HEStd_256_classic}


class HeParamsError(ValueError):
    """CKKS parameters that cannot be used; the message names the parameter."""


@dataclass(frozen=True)
class Context:
    """A CKKS crypto context and the parameters it was made from."""

    cc: fhe.CryptoContext
    params: CkksParams

    @property
    def slots(self) -> int:
        """Number of CKKS slots (ring dimension / 2)."""
        return self.params.ring_dim // 2


def _ccparams(p: CkksParams, insecure: bool) -> fhe.CCParamsCKKSRNS:
    cp = fhe.CCParamsCKKSRNS()
    cp.SetMultiplicativeDepth(p.depth)
    cp.SetScalingModSize(p.scale_bits)
    cp.SetFirstModSize(p.first_mod_bits)
    cp.SetRingDim(p.ring_dim)
    cp.SetBatchSize(p.ring_dim // 2)
    cp.SetScalingTechnique(fhe.ScalingTechnique.FIXEDMANUAL)
    # Complex slots: two real token blocks share one ciphertext (real and imaginary parts); weights are
    # real, so a linear layer acts on both at once at the cost of one.
    cp.SetCKKSDataType(fhe.CKKSDataType.COMPLEX)
    # HYBRID key switching with one large digit: with the 2-3 towers of a depth 1-2 chain it halves
    # the rotation keys and makes hoisting cheap (measured at N=2^14: precompute 1.3 ms instead of
    # 4.1 ms, rotation 4.5 ms instead of 6.5 ms). BV is faster still but its noise breaks decryption.
    cp.SetKeySwitchTechnique(fhe.KeySwitchTechnique.HYBRID)
    cp.SetNumLargeDigits(1)
    cp.SetSecurityLevel(fhe.SecurityLevel.HEStd_NotSet if insecure else _LEVEL[p.security])
    return cp


def make_context(p: CkksParams) -> Context:
    """A CKKS context for the parameters; HeParamsError when they give less than `p.security` bits.

    With `allow_insecure` the security check is skipped (tests only); the plan warns about it.
    """
    try:
        cc = fhe.GenCryptoContext(_ccparams(p, p.allow_insecure))
    except Exception as e:  # OpenFHE raises a generic RuntimeError naming the violated bound
        msg = (str(e).splitlines() or [type(e).__name__])[0].split("(): ")[-1]  # drop OpenFHE's source path
        raise HeParamsError(
            f"ring_dim {p.ring_dim} with first_mod_bits {p.first_mod_bits}, scale_bits {p.scale_bits} and depth "
            f"{p.depth} does not reach {p.security}-bit security by the HE standard (largest log2 Q·P for this ring "
            f"dimension: {MAX_LOG_QP[p.security].get(p.ring_dim, 'n/a')}); raise ring_dim or lower the moduli, or "
            f"set allow_insecure: true for tests ({msg})"
        ) from None
    for feature in (fhe.PKESchemeFeature.PKE, fhe.PKESchemeFeature.KEYSWITCH, fhe.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(feature)
    return Context(cc, p)
