"""The wheel (what `pip install .` and the container image get) carries every data file hsi reads at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_holds_the_calibrations_protos_and_entry_point(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: setuptools reuses a source tree's build/ directory, stale files and all
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("orchestrator", "zones", "protos"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [p for p in (ROOT / "orchestrator/models/calibration").glob("*.json")] + list((ROOT / "protos").glob("*.proto"))
    assert data, "no data files found in the source tree"
    missing = [str(p.relative_to(ROOT)) for p in data if str(p.relative_to(ROOT)) not in names]
    assert not missing, f"the wheel lacks {missing}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "hsi = orchestrator.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
