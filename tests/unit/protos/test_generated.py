"""The committed generated gRPC code matches the .proto files and the grpcio-tools pinned in requirements.lock."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path

from tests.conftest import ROOT


def locked(package: str) -> str:
    """The version requirements.lock pins for `package`."""
    m = re.search(rf"^{re.escape(package)}==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M)
    assert m, f"requirements.lock pins no {package}"
    return m.group(1)


def test_generator_is_the_locked_one() -> None:
    # A fresh install takes the locked grpcio-tools, so the freshness check below compares like with like.
    assert version("grpcio-tools") == locked("grpcio-tools"), (
        "the installed grpcio-tools is not the one requirements.lock pins: rerun `make setup`")


def test_generated_code_names_the_locked_generator() -> None:
    for path in sorted((ROOT / "protos").glob("*_pb2_grpc.py")):
        m = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'", path.read_text(), re.M)
        assert m and m.group(1) == locked("grpcio-tools"), f"{path.name}: regenerate with `make protos`"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True, cwd=ROOT)
    generated = sorted(p.name for p in (tmp_path / "protos").iterdir())
    assert generated, "protoc produced nothing"
    stale = [n for n in generated if (tmp_path / "protos" / n).read_bytes() != (ROOT / "protos" / n).read_bytes()]
    assert not stale, f"generated code is stale, run `make protos`: {stale}"
