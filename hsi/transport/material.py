"""Public key material as one byte bundle (context, public key, relinearisation and rotation keys): the
format the key holder sends and an HE zone installs."""

from __future__ import annotations

PARTS = ("context", "public_key", "mult_keys", "rotation_keys")


class MaterialError(ValueError):
    """A public-material bundle that is malformed or does not deserialise."""


def bundle(parts: dict[str, bytes]) -> tuple[bytes, dict[str, str]]:
    """(payload, header meta) of a material bundle."""
    missing = [p for p in PARTS if p not in parts]
    if missing:
        raise MaterialError(f"public material lacks {missing}")
    meta = {"parts": ",".join(f"{p}:{len(parts[p])}" for p in PARTS)}
    return b"".join(parts[p] for p in PARTS), meta


def unbundle(data: bytes, meta: dict[str, str]) -> dict[str, bytes]:
    """The parts of a bundle; MaterialError when the layout and the payload disagree."""
    try:
        layout = [(name, int(n)) for name, n in (item.split(":") for item in meta["parts"].split(","))]
    except (KeyError, ValueError):
        raise MaterialError(f"bad public-material layout {meta.get('parts')!r}") from None
    if [name for name, _ in layout] != list(PARTS) or sum(n for _, n in layout) != len(data):
        raise MaterialError(f"public-material layout {meta['parts']!r} does not match {len(data)} payload bytes")
    out, pos = {}, 0
    for name, n in layout:
        out[name] = data[pos:pos + n]
        pos += n
    return out
