"""The layer rule holds: protos <- hsi <- zones <- orchestrator, and only the launcher names zone packages."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

COMPOSITION_ROOT = "orchestrator/launcher.py"


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports anywhere in its body (functions included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def offenders(package: str, forbidden: set[str], allowed: frozenset[str] = frozenset()) -> list[str]:
    """Modules of `package` that import one of `forbidden`, with what they import."""
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        hits = imported_packages(path) & forbidden
        if hits and rel not in allowed:
            bad.append(f"{rel}: {sorted(hits)}")
    return bad


def test_shared_layer_imports_neither_plane() -> None:
    assert not offenders("hsi", {"zones", "orchestrator"})


def test_protos_import_nothing_of_the_project() -> None:
    assert not offenders("protos", {"hsi", "zones", "orchestrator"})


def test_zones_never_import_the_orchestrator() -> None:
    assert not offenders("zones", {"orchestrator"})


def test_only_the_launcher_names_zone_packages() -> None:
    assert not offenders("orchestrator", {"zones"}, frozenset({COMPOSITION_ROOT}))


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from zones.he import engine\n    import orchestrator.cli\n")
    assert imported_packages(module) == {"zones", "orchestrator"}
