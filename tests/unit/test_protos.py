"""The committed generated gRPC code matches the .proto files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import ROOT


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True, cwd=ROOT)
    generated = sorted(p.name for p in (tmp_path / "protos").iterdir())
    assert generated, "protoc produced nothing"
    stale = [n for n in generated if (tmp_path / "protos" / n).read_bytes() != (ROOT / "protos" / n).read_bytes()]
    assert not stale, f"generated code is stale, run `make protos`: {stale}"
