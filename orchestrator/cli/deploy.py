"""`hsi deploy`: one party's bundle, its Kubernetes or compose rendering, or every party in network namespaces."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from orchestrator.cli.console import err, out


def cmd_deploy_bundle(args: argparse.Namespace) -> int:
    """Write one party's deployment bundle."""
    from orchestrator.bundle import BundleError, make_bundle

    try:
        manifest = make_bundle(args.policy, args.party, args.out)
    except BundleError as e:
        err.print(f"error: {e}")
        return 2
    processes = cast(list[dict[str, Any]], manifest["processes"])
    principals = cast(list[str], manifest["principals"])
    procs = ", ".join(f"{p['zone']}{' (dealer)' if p['dealer'] else ''}" for p in processes)
    out.print(f"bundle for {args.party} in {args.out}: principals {', '.join(principals)}; "
              f"zones {procs or 'none'}; start with {args.out}/start.sh")
    return 0


def cmd_deploy_render(args: argparse.Namespace) -> int:
    """Print (or write) one party's Kubernetes manifests or compose file."""
    from orchestrator.bundle import BundleError

    if args.sub == "k8s":
        from orchestrator.k8s import render_yaml
    else:
        from orchestrator.compose import render_yaml

    try:
        text = render_yaml(args.policy, args.party, args.image)
    except BundleError as e:
        err.print(f"error: {e}")
        return 2
    if args.out:
        Path(args.out).write_text(text)
        err.print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def cmd_deploy_netns(args: argparse.Namespace) -> int:
    """Run the policy's parties in network namespaces; run one client command in them, or wait for Ctrl-C."""
    from orchestrator.netns import NetnsError, netns_deployment

    # SIGTERM unwinds like Ctrl-C, so the zones, namespaces and firewall rule go too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        with contextlib.ExitStack() as stack:
            work = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="hsi-netns-"))
            dep = stack.enter_context(netns_deployment(args.policy, work, args.network, args.startup_s))
            for party, ns in dep.namespaces.items():
                err.print(f"{party}: namespace {ns}, address {dep.addresses[party]}, bundle {dep.bundles[party]}")
            err.print(f"links: {dep.shaping}")
            if command:
                return subprocess.run(dep.client_hsi(command)).returncode
            err.print(f"up. As the client: {shlex.join(dep.client_hsi(['embed', 'TEXT']))}\n"
                      "Ctrl-C tears everything down.")
            while True:
                time.sleep(3600)
    except NetnsError as e:
        err.print(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        return 130


def add_deploy(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi deploy bundle|k8s|compose|netns`."""
    deploy = sub.add_parser("deploy", help="multi-party deployment").add_subparsers(dest="sub", required=True)
    s = deploy.add_parser("bundle", help="write what one party needs to run its zones, and nothing else")
    s.add_argument("--policy", required=True)
    s.add_argument("--party", required=True)
    s.add_argument("--out", required=True, help="a new directory")
    s.set_defaults(func=cmd_deploy_bundle)
    for kind, helptext in (("k8s", "render one party's Kubernetes manifests"),
                           ("compose", "render one party's docker compose file (run it beside its bundle)")):
        s = deploy.add_parser(kind, help=helptext)
        s.add_argument("--policy", required=True)
        s.add_argument("--party", required=True)
        s.add_argument("--image", default="hsi:latest", help="container image holding hsi (deploy/compose/Dockerfile)")
        s.add_argument("--out", help="write to this file instead of standard output")
        s.set_defaults(func=cmd_deploy_render)

    s = deploy.add_parser("netns", help="run every party in a network namespace of its own on this machine (root)",
                          description="Each party's zones start from its bundle in its own namespace, the links "
                                      "shaped by a network profile; then one hsi command runs as the client (e.g. "
                                      "`embed TEXT --json`), or, without one, the parties stay up until interrupted. "
                                      "Everything is torn down after.")
    s.add_argument("--policy", required=True)
    s.add_argument("--network", default="lan", help="profile: lan (0.2 ms, 10 Gbit/s), wan (40 ms, 100 Mbit/s), "
                   "wan-latency (40 ms, 1 Gbit/s) or wan-bandwidth (0 ms, 100 Mbit/s)")
    s.add_argument("--workdir", help="where bundles and state go (default: a temporary directory)")
    s.add_argument("--startup-s", type=float, default=600.0, help="how long the zones may take to come up")
    s.add_argument("command", nargs=argparse.REMAINDER, help="an hsi command for the client, without --policy")
    s.set_defaults(func=cmd_deploy_netns)
