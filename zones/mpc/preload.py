"""The slow imports of an MPC worker, done once per zone process by the fork server its workers fork from.

Each session runs in a fresh worker process. Spawned from scratch, a worker spent ~12 s of CPU on imports
(the zone's CLI, PyTorch, CrypTen, transformers) — three at every session start on one 2-core machine took
the CPU from the session itself. Forked from a server that imported all of it once, a worker starts at once.
The server imports only (no tensor math, no threads), so a forked child does not inherit a live OpenMP pool.
"""

from zones.mpc.compat import import_crypten, single_threaded_torch

single_threaded_torch()
import_crypten()
import transformers.models.auto.modeling_auto  # noqa: E402,F401  (what reading a model's config imports)
