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


def deserialize_public(parts: dict[str, bytes]) -> tuple[fhe.CryptoContext, fhe.PublicKey]:
    """The context and public key of an unbundled public-material bundle; RuntimeError when they do not load."""
    cc = fhe.DeserializeCryptoContextString(parts["context"], fhe.BINARY)
    for feature in (fhe.PKESchemeFeature.PKE, fhe.PKESchemeFeature.KEYSWITCH, fhe.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(feature)
    return cc, fhe.DeserializePublicKeyString(parts["public_key"], fhe.BINARY)
