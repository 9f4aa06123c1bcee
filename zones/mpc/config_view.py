"""CrypTen's configuration read through plain attributes instead of OmegaConf on every access.

CrypTen reads its configuration (`cfg.mpc.protocol`, `cfg.communicator.verbose`, `cfg.encoder.precision_bits`
...) about 20 times per multiplication, each read a walk through OmegaConf nodes: measured ~2.8 ms of a ~10 ms
multiplication on the 2-core machine (0.1 ms through the views). Here each configuration object CrypTen holds
(the loaded one, and the merged ones its `temp_override` makes) is converted once into read-only namespaces,
kept for as long as that object is current. Writing through an attribute chain (`cfg.mpc.provider = ...`)
after `install` is refused: set the configuration before, as the workers do.
"""

from __future__ import annotations

from typing import Any

from zones.mpc.compat import import_crypten

_LIMIT = 16  # configurations remembered (the base one, plus temp_override's short-lived merges)


class ConfigView:
    """A read-only attribute view of one level of a configuration."""

    def __init__(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            object.__setattr__(self, key, ConfigView(value) if isinstance(value, dict) else value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"CrypTen's configuration is read-only once the worker runs (tried to set {name!r})")

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)


_views: dict[int, tuple[Any, ConfigView]] = {}


def view_of(config: Any) -> ConfigView:
    """The read-only view of an OmegaConf configuration object (made on its first use)."""
    entry = _views.get(id(config))
    if entry is None or entry[0] is not config:
        from omegaconf import OmegaConf

        if len(_views) >= _LIMIT:
            _views.clear()
        entry = (config, ConfigView(OmegaConf.to_container(config, resolve=True)))  # type: ignore[arg-type]
        _views[id(config)] = entry
    return entry[1]


def _getattribute(self: Any, name: str) -> Any:
    try:
        return object.__getattribute__(self, name)
    except AttributeError:
        pass
    result: Any = view_of(object.__getattribute__(self, "config"))
    for key in name.split("."):
        result = getattr(result, key)
    return result


def install() -> None:
    """Make CrypTen's configuration reads go through `view_of`."""
    import_crypten()
    from crypten.config.config import CrypTenConfig

    CrypTenConfig.__getattribute__ = _getattribute
