"""Serialising a key's public material on the key-holder side."""

from __future__ import annotations

import openfhe as fhe


def serialize_public(cc: fhe.CryptoContext, public: fhe.PublicKey) -> dict[str, bytes]:
    """Serialise the context, a public key and the evaluation keys of its secret key (key-holder side)."""
    tag = public.GetKeyTag()
    try:
        rotation_keys = fhe.SerializeEvalAutomorphismKeyString(fhe.BINARY, tag)
    except RuntimeError:  # OpenFHE raises when the key has no rotation keys at all
        rotation_keys = b""
    return {
        "context": fhe.Serialize(cc, fhe.BINARY),
        "public_key": fhe.Serialize(public, fhe.BINARY),
        "mult_keys": fhe.SerializeEvalMultKeyString(fhe.BINARY, tag),
        "rotation_keys": rotation_keys,
    }
