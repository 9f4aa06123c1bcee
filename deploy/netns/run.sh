#!/bin/sh
# Every party of a policy in a network namespace of its own on this machine (root), its zones started from its
# bundle, the links shaped by a profile (lan: 0.2 ms, 10 Gbit/s; wan: 40 ms, 100 Mbit/s); then one hsi command
# runs as the client, or without one the parties stay up until Ctrl-C. Everything is torn down after. E.g.
#   deploy/netns/run.sh --policy deploy/policies/private-minilm.yaml --network wan embed "some text" --json
# Several deployments may run at once: each takes its own bridge and namespaces (hsi-*, hsi1-*, ...).
set -eu
HSI=${HSI:-$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/hsi}
exec "$HSI" deploy netns "$@"
