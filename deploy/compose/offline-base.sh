#!/usr/bin/env bash
# Build the image's base without a container registry: Debian bookworm from Debian's own mirror (debootstrap)
# with this machine's CPython 3.10 as `python`/`pip` on PATH — what python:3.10-slim-bookworm provides.
# For hosts that cannot pull from Docker Hub (this project's dev machines); real hosts use the default base.
#   deploy/compose/offline-base.sh [TAG]        (root; needs debootstrap and docker)
#   docker build -f deploy/compose/Dockerfile --build-arg BASE=TAG -t hsi:latest .
set -euo pipefail
TAG="${1:-hsi-base:py3.10-bookworm}"
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "$TAG exists"
    exit 0
fi
PY="$(PYENV_VERSION=3.10.13 pyenv which python3.10 2>/dev/null || command -v python3.10 || true)"
if [ -z "$PY" ] || ! "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    echo "error: no CPython 3.10 on this machine to put in the base image" >&2
    exit 2
fi
PREFIX="$("$PY" -c 'import sys; print(sys.base_prefix)')"
command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
# the shared libraries CPython's extension modules link against, as in the python:3.10 images
debootstrap --variant=minbase --include=ca-certificates,libssl3,libffi8,libsqlite3-0,libuuid1,libgdbm6,\
libgdbm-compat4,libnsl2,libbz2-1.0,liblzma5,libreadline8,libncursesw6,zlib1g,libexpat1 \
    bookworm "$ROOT" http://deb.debian.org/debian
# CPython keeps its build prefix (its libpython is found through an absolute RUNPATH); only its own files go in
mkdir -p "$ROOT$PREFIX"
cp -a "$PREFIX/." "$ROOT$PREFIX/"
rm -rf "$ROOT$PREFIX/lib/python3.10/site-packages/"*
chroot "$ROOT" "$PREFIX/bin/python3.10" -m ensurepip --default-pip >/dev/null
for exe in python python3; do ln -sf "$PREFIX/bin/python3.10" "$ROOT/usr/local/bin/$exe"; done
for exe in pip pip3; do ln -sf "$PREFIX/bin/pip3.10" "$ROOT/usr/local/bin/$exe"; done
# the host's own CAs (a TLS-inspecting proxy's, say), so pip in the build trusts what the host trusts
# (pip reads its own CA list unless PIP_CERT names the system's)
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null
fi
chroot "$ROOT" python -c 'import ssl, sqlite3, ctypes, lzma, bz2; print("base python", __import__("sys").version)'
rm -rf "$ROOT/var/cache/apt/archives/"*.deb "$ROOT/var/lib/apt/lists/"*
# its bin (where pip puts console scripts such as `hsi`) goes on PATH, as /usr/local/bin is in python:3.10
tar -C "$ROOT" -c . | docker import --change "ENV PATH=$PREFIX/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' --change 'CMD ["python3"]' - "$TAG"
echo "built $TAG"
