"""`hsi`: plan, run and operate hybrid secure inference from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator.planner import Plan, PlanError
from orchestrator.policy import HeZone, PolicyError, TeeZone, load_policy, policy_json_schema

# soft_wrap: a message is one line however narrow the terminal, so the command lines printed stay whole
err = Console(stderr=True, soft_wrap=True)
out = Console()


def _plan_tables(plan: Plan) -> None:
    t = Table(title=f"plan of {plan.policy} ({plan.model}), estimated for {plan.est_tokens} tokens")
    for col in ("stage", "zone", "kind", "parties", "ops", "first op", "last op", "est s"):
        t.add_column(col)
    for s in plan.stages:
        t.add_row(str(s.index), s.zone, s.kind, ",".join(s.parties), str(len(s.ops)), s.ops[0], s.ops[-1],
                  f"{s.est_seconds:.3f}")
    out.print(t)
    c = Table(title="conversions (every tensor: `hsi plan --json`)")
    for col in ("from", "to", "kind", "tensors", "est bytes", "mask hides (bits, min)", "error budget (max)", "how"):
        c.add_column(col)
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for conv in plan.conversions:
        groups.setdefault((conv.from_zone, conv.to_zone, conv.kind), []).append(conv)
    for (src, dst, kind), convs in groups.items():
        hiding = [x.hiding_bits for x in convs if x.hiding_bits is not None]
        budget = [x.error_budget for x in convs if x.error_budget is not None]
        c.add_row(src, dst, kind, str(len(convs)), f"{sum(x.est_bytes for x in convs):,}",
                  f"{min(hiding):.1f}" if hiding else "-", f"{max(budget):.2g}" if budget else "-", convs[0].how)
    out.print(c)
    p = Table(title="privacy report: what each party sees")
    for col in ("party", "plaintext activations", "plaintext weights", "ciphertexts", "shares"):
        p.add_column(col)
    for party, v in plan.privacy.items():
        p.add_row(party, _summary(v.activations), _summary(v.weights), _summary(v.ciphertexts), _summary(v.shares))
    out.print(p)
    out.print(f"estimated total: {plan.est_seconds:.3f} s, {plan.est_bytes:,} bytes between zones")
    for w in plan.warnings:
        out.print(f"[bold red]warning:[/] {w}")


def _summary(names: list[str], show: int = 3) -> str:
    if not names:
        return "-"
    head = ", ".join(names[:show])
    return f"{len(names)}: {head}" + (", ..." if len(names) > show else "")


def cmd_deploy_bundle(args: argparse.Namespace) -> int:
    """Write one party's deployment bundle."""
    from orchestrator.bundle import BundleError, make_bundle

    try:
        manifest = make_bundle(args.policy, args.party, args.out)
    except BundleError as e:
        err.print(f"error: {e}")
        return 2
    procs = ", ".join(f"{p['zone']}{' (dealer)' if p['dealer'] else ''}" for p in manifest["processes"])  # type: ignore[attr-defined]
    out.print(f"bundle for {args.party} in {args.out}: principals {', '.join(manifest['principals'])}; "  # type: ignore[arg-type]
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


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure a model's MPC calibration constants on the public corpus and write them (the model owner runs it)."""
    from orchestrator.calibration import calibrate, packaged_path

    data = calibrate(args.model)
    path = Path(args.out) if args.out else packaged_path(args.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    iters = [e["inv_sqrt_iters"] for e in data["ops"].values() if "inv_sqrt_iters" in e]
    out.print(f"wrote {path}: {len(data['ops'])} ops, inverse square roots need {min(iters)}-{max(iters)} "
              "Newton iterations")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the plan of a policy."""
    from orchestrator import api

    plan = api.plan(args.policy, tokens=args.tokens)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        _plan_tables(plan)
    return 0


def cmd_policy_schema(args: argparse.Namespace) -> int:
    """Print the policy JSON Schema."""
    print(json.dumps(policy_json_schema(), indent=2))
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate a policy file (and plan it against its model)."""
    from orchestrator import api

    api.plan(args.policy)
    out.print(f"{args.policy}: ok")
    return 0


def cmd_certs_init(args: argparse.Namespace) -> int:
    """Create the dev CA and the certificates of every principal of the given policies."""
    from orchestrator.launcher import ensure_certs

    policies = args.policy or sorted(str(p) for p in Path("deploy/policies").glob("*.yaml"))
    directory = Path(args.out)
    from zones.common.certs import init_ca

    created = init_ca(directory)
    issued: list[str] = []
    for p in policies:
        issued += ensure_certs(load_policy(p), directory)
    err.print(f"certs in {directory}: CA {'created' if created else 'kept'}, {len(issued)} certificates issued")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start every zone of a policy locally."""
    from orchestrator.launcher import up

    pids = up(args.policy)
    for k, pid in sorted(pids.items()):
        out.print(f"{k}: pid {pid}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the zones `hsi up` started."""
    from orchestrator.launcher import down

    stopped = down(args.policy)
    out.print(f"stopped {len(stopped)} zone processes" if stopped else "nothing was running")
    return 0


def cmd_zone_serve(args: argparse.Namespace) -> int:
    """Run one zone process in the foreground."""
    from zones.serve import serve_zone

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not serve_zone(load_policy(args.policy), args.zone, args.party, dealer=args.dealer):
        logging.shutdown()
        os._exit(1)  # a handler thread still in an RPC would hold the interpreter's exit (the executor joins it)
    return 0


def _progress() -> Any:
    from rich.progress import Progress

    return Progress(console=err, transient=True, disable=not err.is_terminal)


def _metrics_table(result: dict[str, Any]) -> None:
    m = result["metrics"]
    t = Table(title=f"wall {m['wall_s']:.3f} s")
    t.add_column("zone")
    t.add_column("seconds", justify="right")
    for zone, s in m["time_by_zone"].items():
        t.add_row(zone, f"{s:.3f}")
    out.print(t)
    b = Table()
    b.add_column("link")
    b.add_column("bytes", justify="right")
    for link, n in m["bytes_by_link"].items():
        b.add_row(link, f"{n:,}")
    out.print(b)
    received: dict[tuple[str, str], dict[str, int]] = {}
    for r in result["privacy"]["observed"]:
        counts = received.setdefault((f"{r['party']}/{r['zone']}", r["source_principal"]), {})
        counts[r["encoding"]] = counts.get(r["encoding"], 0) + 1
    seen = Table(title="what each zone received (tensors by encoding)")
    seen.add_column("zone")
    seen.add_column("from")
    seen.add_column("received", justify="right")
    for (zone, source), counts in sorted(received.items()):
        seen.add_row(zone, source, ", ".join(f"{n} {enc}" for enc, n in sorted(counts.items())))
    out.print(seen)
    mism = result["privacy"]["mismatches"]
    out.print("data plane matches the privacy report" if not mism else
              "[bold red]data plane differs from the privacy report:[/]\n  " + "\n  ".join(mism))


def _run(args: argparse.Namespace, op: str) -> int:
    from orchestrator import api

    with _progress() as progress:
        task = progress.add_task(op, total=None)

        def report(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        if op == "embed":
            result = api.embed(args.policy, args.text, check=args.check, progress=report)
        else:
            result = api.generate(args.policy, args.prompt, args.max_new_tokens, chat=not args.no_chat,
                                  check=args.check, progress=report)
    ok = not args.check or api.check_passed(result, getattr(args, "min_cosine", 0.99))
    if args.json:
        print(json.dumps(result))
    else:
        o = result["output"]
        if op == "embed":
            emb = o["embedding"]
            head = ", ".join(f"{x:.4f}" for x in emb[:6])
            out.print(f"embedding ({len(emb)} dims, {o['tokens']} tokens): [{head}, ...]")
        else:
            out.print(f"[bold]{o['text']}[/]\n({len(o['token_ids'])} tokens, ids {o['token_ids']})")
        _metrics_table(result)
        if "reference" in result:
            out.print("reference: " + ", ".join(f"{k} {v}" for k, v in result["reference"].items()))
    if not ok:
        err.print("[bold red]check failed[/]: the run differs from the plaintext reference or the privacy report")
    return 0 if ok else 3


def cmd_embed(args: argparse.Namespace) -> int:
    """Sentence embedding of a text under a policy."""
    return _run(args, "embed")


def cmd_generate(args: argparse.Namespace) -> int:
    """Greedy generation under a policy."""
    return _run(args, "generate")


def _tee_zone(policy: Any, zone: str | None) -> str:
    tees = [n for n, z in policy.zones.items() if z.kind == "tee"]
    if zone:
        return zone
    if len(tees) != 1:
        raise SystemExit(f"policy has tee zones {tees}; name one with --zone")
    return tees[0]


def cmd_keys(args: argparse.Namespace) -> int:
    """Key-service operations against a policy's tee zone."""
    from orchestrator.keyclient import KeyClient

    policy = load_policy(args.policy)
    zone = _tee_zone(policy, args.zone)
    tee = policy.zones[zone]
    assert isinstance(tee, TeeZone)
    principal = args.principal or f"{tee.party}/admin"
    client = KeyClient(policy, zone, principal)
    try:
        if args.sub == "attest":
            q = client.attest(pin=not args.no_verify)
            out.print(f"measurement:  {q.measurement.hex()}\nplatform_key: {client.platform_key.hex()}\n"
                      f"enclave key:  {q.enclave_public_key.hex()}\nsimulated:    {q.simulated}\n"
                      + ("quote verified against the policy's pins" if not args.no_verify else
                         "NOT verified (--no-verify): pin these values in the policy after checking them"))
        elif args.sub == "create":
            he = next((h for h in policy.zones.values() if isinstance(h, HeZone) and h.key == args.key), None)
            ckks = he.ckks if he else None
            r = client.create(args.key, args.ring_dim or (ckks.ring_dim if ckks else 16384),
                              ckks.scale_bits if ckks else 35, ckks.first_mod_bits if ckks else 60,
                              ckks.depth if ckks else 1)
            out.print(f"created key {r.key} in {zone} ({tee.party}); public key sha256 {r.public_key_sha256.hex()}")
        elif args.sub == "list":
            for k in client.list():
                out.print(f"{k.key} v{k.version} {'destroyed' if k.destroyed else 'active'} {k.params_json} "
                          f"pk {k.public_key_sha256[:16]}")
        elif args.sub in ("rotate", "destroy"):
            k = getattr(client, args.sub)(args.key)
            out.print(f"{args.sub}: {k.key} now v{k.version}{' (destroyed)' if k.destroyed else ''}")
    finally:
        client.close()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Verify or show a key-service audit log file."""
    from zones.tee.audit import read_log, verify_records

    try:
        records = read_log(Path(args.log))
    except ValueError as e:
        print(f"audit: {e}", file=sys.stderr)
        return 1
    if args.sub == "show":
        for r in records:
            out.print(f"{r.index:5d} {r.time:.3f} {r.decision:5s} {r.principal} {r.operation} {r.key} "
                      f"{r.session} {r.reason}", highlight=False)
        return 0
    problems = verify_records(records)
    if problems:
        for p in problems:
            print(f"audit: {p}", file=sys.stderr)
        return 1
    out.print(f"{args.log}: {len(records)} records, chain intact")
    return 0


def cmd_tee_init_token(args: argparse.Namespace) -> int:
    """Create a SoftHSM2 token for a dev deployment, with a random PIN in a 0600 file."""
    import secrets

    from orchestrator.policy import HsmSettings
    from zones.tee.hsm import Hsm, HsmConfig, init_softhsm_token

    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    pin_file = d / "user.pin"
    if not pin_file.exists():
        pin_file.write_text(secrets.token_hex(16))
        pin_file.chmod(0o600)
    pin = pin_file.read_text().strip()
    conf = init_softhsm_token(d, args.label, pin, secrets.token_hex(16))
    os.environ["SOFTHSM2_CONF"] = str(conf)
    hsm = Hsm(HsmConfig(HsmSettings().module, args.label, pin))
    try:
        # Clients pin this key; a dev policy points platform_key_file here.
        (d / "platform.pub").write_text(hsm.platform_public_key().hex() + "\n")
    finally:
        hsm.close()
    err.print(f"SoftHSM2 token {args.label!r} ready: SOFTHSM2_CONF={conf}, PIN in {pin_file}, platform key in "
              f"{d / 'platform.pub'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the end-to-end benchmark (bench/e2e.py) with the given arguments."""
    import subprocess

    script = Path(__file__).resolve().parent.parent / "bench" / "e2e.py"
    if not script.is_file():
        raise SystemExit("bench/e2e.py is not in this installation; run from a source checkout")
    return subprocess.call([sys.executable, str(script), *args.bench_args])


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the Orchestrator gRPC service at the client."""
    from orchestrator.service import serve_orchestrator

    logging.basicConfig(level=logging.INFO)
    serve_orchestrator(load_policy(args.policy), args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `hsi`."""
    ap = argparse.ArgumentParser(prog="hsi", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="show which zone runs each op, conversions, privacy report, cost")
    p.add_argument("--policy", required=True)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--tokens", type=int, default=32, help="token count the cost estimate assumes")
    p.set_defaults(func=cmd_plan)

    pol = sub.add_parser("policy", help="policy schema and validation").add_subparsers(dest="sub", required=True)
    s = pol.add_parser("schema", help="print the policy JSON Schema")
    s.set_defaults(func=cmd_policy_schema)
    s = pol.add_parser("check", help="validate a policy and plan it")
    s.add_argument("policy")
    s.set_defaults(func=cmd_policy_check)

    certs = sub.add_parser("certs", help="development PKI").add_subparsers(dest="sub", required=True)
    s = certs.add_parser("init", help="create a dev CA and every principal's certificate")
    s.add_argument("--out", default=".hsi/certs")
    s.add_argument("--policy", action="append", help="policy whose principals get certificates "
                                                      "(default: deploy/policies/*.yaml)")
    s.set_defaults(func=cmd_certs_init)

    for name, fn, helptext in (("up", cmd_up, "start every zone of a policy as local processes"),
                               ("down", cmd_down, "stop the zones `hsi up` started")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--policy", required=True)
        s.set_defaults(func=fn)

    for name, fn, arg in (("embed", cmd_embed, "text"), ("generate", cmd_generate, "prompt")):
        s = sub.add_parser(name, help=f"run {name} under a policy (starts the zones if they are not up)")
        s.add_argument("--policy", required=True)
        s.add_argument(arg)
        s.add_argument("--json", action="store_true", help="print one JSON object")
        s.add_argument("--check", action="store_true", help="compare with the plaintext HF model and the privacy "
                                                            "report; exit 3 on a difference")
        if name == "embed":
            s.add_argument("--min-cosine", type=float, default=0.99, help="cosine --check requires")
        else:
            s.add_argument("--max-new-tokens", type=int, default=16)
            s.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
        s.set_defaults(func=fn)

    zone = sub.add_parser("zone", help="zone processes").add_subparsers(dest="sub", required=True)
    s = zone.add_parser("serve", help="run one zone process in the foreground")
    s.add_argument("--policy", required=True)
    s.add_argument("--zone", required=True)
    s.add_argument("--party", required=True)
    s.add_argument("--dealer", action="store_true", help="run the MPC zone's dealer (Beaver triples) at this party")
    s.set_defaults(func=cmd_zone_serve)

    keys = sub.add_parser("keys", help="key service of a tee zone").add_subparsers(dest="sub", required=True)
    for name, helptext in (("attest", "fetch and verify an attestation quote"), ("create", "create a CKKS key"),
                           ("list", "list keys"), ("rotate", "rotate a key"), ("destroy", "destroy a key")):
        s = keys.add_parser(name, help=helptext)
        s.add_argument("--policy", required=True)
        s.add_argument("--zone", help="tee zone (default: the policy's only one)")
        s.add_argument("--principal", help="principal whose certificate to use (default: <tee party>/admin)")
        if name in ("create", "rotate", "destroy"):
            s.add_argument("--key", required=True)
        if name == "create":
            s.add_argument("--ring-dim", type=int)
        if name == "attest":
            s.add_argument("--no-verify", action="store_true", help="print the quote without checking the pins")
        s.set_defaults(func=cmd_keys)

    audit = sub.add_parser("audit", help="key-service audit log").add_subparsers(dest="sub", required=True)
    for name in ("verify", "show"):
        s = audit.add_parser(name, help=f"{name} a hash-chained audit log")
        s.add_argument("--log", required=True)
        s.set_defaults(func=cmd_audit)

    tee = sub.add_parser("tee", help="simulated enclave set-up").add_subparsers(dest="sub", required=True)
    s = tee.add_parser("init-token", help="create a SoftHSM2 token for a dev deployment")
    s.add_argument("--dir", default=".hsi/softhsm")
    s.add_argument("--label", default="hsi-tee")
    s.set_defaults(func=cmd_tee_init_token)

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
    s.add_argument("--network", default="lan", help="profile: lan (0.2 ms, 10 Gbit/s) or wan (40 ms, 100 Mbit/s)")
    s.add_argument("--workdir", help="where bundles and state go (default: a temporary directory)")
    s.add_argument("--startup-s", type=float, default=600.0, help="how long the zones may take to come up")
    s.add_argument("command", nargs=argparse.REMAINDER, help="an hsi command for the client, without --policy")
    s.set_defaults(func=cmd_deploy_netns)

    s = sub.add_parser("calibrate", help="measure a model's MPC calibration constants (model owner)")
    s.add_argument("--model", required=True)
    s.add_argument("--out", help="output file (default: the file shipped for a packaged model)")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("bench", help="run bench/e2e.py (arguments after -- go to it)")
    s.add_argument("bench_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("serve", help="run the Orchestrator gRPC service at the client")
    s.add_argument("--policy", required=True)
    s.add_argument("--port", type=int, default=50100)
    s.set_defaults(func=cmd_serve)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hsi` console script."""
    from orchestrator.keyclient import KeyServiceError
    from orchestrator.launcher import LaunchError
    from orchestrator.models.registry import ModelNotFound
    from orchestrator.runtime import RunError
    from zones.common.attestation import AttestationError
    from zones.common.certs import CertError
    from zones.common.engine import ZoneError
    from zones.tee.hsm import HsmError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (PolicyError, PlanError, RunError, LaunchError, ModelNotFound, CertError, ZoneError, KeyServiceError,
            AttestationError, HsmError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
