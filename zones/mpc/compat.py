"""Import CrypTen 0.4.1 on a current PyTorch, with cryptographic randomness.

CrypTen's ONNX converter imports `torch.onnx._internal.registration`, which recent
PyTorch removed. hsi never converts ONNX models, so a placeholder module stands in
for it; anything that touches the placeholder fails loudly instead of silently.

CrypTen draws its masks, triples and zero-sharings from `torch.Generator` (Mersenne
Twister); on import, `randomness.install` re-points every such draw at the AES-CTR
PRG of `zones.mpc.prg` (seeds from os.urandom) and disables CrypTen's generators.
"""

from __future__ import annotations

import sys
import types
from typing import Any

_MODULE = "torch.onnx._internal.registration"


class _Unavailable:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("CrypTen's ONNX converter is not available with this PyTorch (hsi does not use it)")


def import_crypten() -> Any:
    """The `crypten` module, importable on this PyTorch, its randomness cryptographic (`zones.mpc.randomness`;
    installed here, before any `crypten.init()`)."""
    if _MODULE not in sys.modules:
        import torch.onnx  # noqa: F401  (the parent package must exist first)

        try:
            __import__(_MODULE)
        except ImportError:
            placeholder = types.ModuleType(_MODULE)
            placeholder.registry = _Unavailable()  # type: ignore[attr-defined]
            sys.modules[_MODULE] = placeholder
    import crypten

    from zones.mpc import randomness, tls_comm

    randomness.install(crypten)
    tls_comm.install(crypten)
    return crypten


def single_threaded_torch() -> None:
    """Make this MPC process run its tensor ops on one thread.

    CrypTen's ops are element-wise passes over activation-sized tensors; with two or more parties and the
    dealer on few cores, torch's per-process OpenMP pools oversubscribe them and spin: measured on the
    2-core machine, one comparison of 35x1536 shares took 0.88 s with two threads per process and 0.23 s
    with one (GELU 2.5 s -> 0.78 s).
    """
    import torch

    torch.set_num_threads(1)


def fast_crypten(dcf_max_elements: int = 0) -> None:
    """Install this project's measured speed-ups of CrypTen: configuration reads without OmegaConf
    (`config_view`), dealer triples requested before the opening rather than after (`triples`), both the same
    protocol; comparisons of up to `dcf_max_elements` elements in one round from the dealer's DCF keys
    (`fss`). Call after setting the configuration and `crypten.init()`."""
    from zones.mpc import config_view, fss, triples

    config_view.install()
    triples.install()
    if dcf_max_elements:
        fss.install(dcf_max_elements)
