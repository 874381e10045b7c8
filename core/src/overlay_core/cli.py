"""``overlay-core``: run the agent (Flannel's flags), list backends, check configs, run the lab.

``overlay-core run`` takes flanneld's flags with the same names and defaults, in ``--x``,
``-x`` and ``--x=v`` forms; each flag not given on the command line is read from
``FLANNELD_<NAME>`` (upper case, ``-`` → ``_``) when that variable is non-empty. With no
arguments at all and some ``FLANNELD_*`` variable set, ``overlay-core`` runs the agent, as
flanneld does. Every flanneld flag is accepted; the Kubernetes subnet manager is not supported
(etcd only), so ``--kube-subnet-mgr`` is refused and the kube-mode-only flags have no effect,
as in flanneld without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing
from collections.abc import Sequence

from ._version import __version__
from .errors import OverlayError

LOGGER = logging.getLogger("overlay.cli")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "t", "true", "yes", "y", "on"):
        return True
    if value in ("0", "f", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use true or false)")


KUBE_ONLY = "Kubernetes subnet manager only: accepted, no effect with etcd (as in flanneld)"

# name, default, type (None = string, "bool", int, "list" for repeatable), help
RUN_FLAGS = [
    ("etcd-endpoints", "http://127.0.0.1:4001,http://127.0.0.1:2379", None, "comma-separated etcd endpoints"),
    ("etcd-prefix", "/coreos.com/network", None, "etcd prefix of the network"),
    ("etcd-keyfile", "", None, "TLS client key file"),
    ("etcd-certfile", "", None, "TLS client certificate file"),
    ("etcd-cafile", "", None, "TLS CA bundle"),
    ("etcd-username", "", None, "etcd username"),
    ("etcd-password", "", None, "etcd password"),
    ("iface", [], "list", "interface name or IP to use (repeatable, tried in order)"),
    ("iface-regex", [], "list", "regex over interface IPs, then names (repeatable)"),
    ("iface-can-reach", "", None, "use the interface that routes to this IP"),
    ("subnet-file", "/run/flannel/subnet.env", None, "where to write the subnet environment"),
    ("public-ip", "", None, "IPv4 address other nodes reach this one on"),
    ("public-ipv6", "", None, "IPv6 address other nodes reach this one on"),
    ("subnet-lease-renew-margin", 60, int, "renew the lease this many minutes before expiry (1-1439)"),
    ("ip-masq", False, "bool", "masquerade traffic leaving the cluster network"),
    ("ip-masq-fully-random-disable", False, "bool", "masquerade without --random-fully"),
    ("iptables-resync", 5, int, "seconds between firewall drift checks"),
    ("iptables-forward-rules", True, "bool", "accept forwarded traffic of the network"),
    ("ip-blackhole-route", False, "bool",
     "keep a blackhole route for this node's subnet (checked every --iptables-resync seconds)"),
    ("healthz-ip", "0.0.0.0", None, "address of /healthz /readyz /metrics"),
    ("healthz-port", 0, int, "port of /healthz /readyz /metrics (0: off)"),
    ("reconcile-interval", 30, float,
     "seconds between full desired-vs-actual reconciles (kernel events trigger one at once)"),
    ("kube-subnet-mgr", False, "bool", "not supported: overlay keeps leases in etcd only"),
    ("kube-api-url", "", None, KUBE_ONLY),
    ("kube-annotation-prefix", "flannel.alpha.coreos.com", None, KUBE_ONLY),
    ("kubeconfig-file", "", None, KUBE_ONLY),
    ("net-config-path", "/etc/kube-flannel/net-conf.json", None, KUBE_ONLY),
    ("set-node-network-unavailable", True, "bool", KUBE_ONLY),
    ("vmodule", "", None, "klog per-module verbosity: accepted for flanneld compatibility, no effect"),
    ("log_backtrace_at", "", None, "klog backtrace location: accepted for flanneld compatibility, no effect"),
    ("state-dir", "/run/overlay", None,
     "this agent's directory for helper processes' records, logs and sockets (ours)"),
    ("subnet-lease-ttl", 86400, int,
     "lease TTL in seconds (ours; Flannel's is fixed at 24 h); must exceed the renew margin"),
]


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    for name, default, kind, help_text in RUN_FLAGS:
        dest = name.replace("-", "_")
        names = [f"--{name}", f"-{name}"]
        kw: dict = {"dest": dest, "default": None,
                    "help": f"{help_text} (default {default!r})" if help_text else argparse.SUPPRESS}
        if kind == "bool":
            kw.update(nargs="?", const=True, type=_bool, metavar="BOOL")
        elif kind == "list":
            kw.update(action="append", metavar="VALUE")
        elif kind is not None:
            kw.update(type=kind)
        parser.add_argument(*names, **kw)
    parser.add_argument("-v", "--v", dest="v", type=int, default=None, help="log verbosity (0-10)")


def _resolve(ns: argparse.Namespace, env: dict[str, str]) -> dict:
    """Command line wins; then FLANNELD_* variables; then the defaults."""
    values = {}
    for name, default, kind, _ in RUN_FLAGS:
        dest = name.replace("-", "_")
        value = getattr(ns, dest)
        if value is None:
            raw = env.get("FLANNELD_" + dest.upper(), "")
            if raw:
                try:
                    if kind == "bool":
                        value = _bool(raw)
                    elif kind == "list":
                        value = [raw]
                    elif kind is not None:
                        value = kind(raw)
                    else:
                        value = raw
                except (ValueError, argparse.ArgumentTypeError):
                    raise OverlayError(f"FLANNELD_{dest.upper()}={raw!r} is not a valid {name}") from None
        values[dest] = default if value is None else value
    verbosity = ns.v if ns.v is not None else env.get("FLANNELD_V", "0")
    try:
        values["v"] = int(verbosity)
    except ValueError:
        raise OverlayError(f"FLANNELD_V={verbosity!r} is not a number") from None
    return values


def build_options(values: dict):
    from .agent import AgentOptions
    from .etcd import EtcdOptions
    from .iface import IfaceOptions

    endpoints = tuple(e for e in values["etcd_endpoints"].split(",") if e)
    return AgentOptions(
        etcd=EtcdOptions(
            endpoints=endpoints,
            cafile=values["etcd_cafile"],
            certfile=values["etcd_certfile"],
            keyfile=values["etcd_keyfile"],
            username=values["etcd_username"],
            password=values["etcd_password"],
        ),
        prefix=values["etcd_prefix"],
        iface=IfaceOptions(
            ifaces=tuple(values["iface"]),
            regexes=tuple(values["iface_regex"]),
            can_reach=values["iface_can_reach"],
            public_ip=values["public_ip"],
            public_ipv6=values["public_ipv6"],
        ),
        subnet_file=values["subnet_file"],
        renew_margin=values["subnet_lease_renew_margin"],
        ip_masq=values["ip_masq"],
        masq_fully_random=not values["ip_masq_fully_random_disable"],
        forward_rules=values["iptables_forward_rules"],
        blackhole_route=values["ip_blackhole_route"],
        healthz_ip=values["healthz_ip"],
        healthz_port=values["healthz_port"],
        firewall_resync=values["iptables_resync"],
        reconcile_interval=values["reconcile_interval"],
        lease_ttl=values["subnet_lease_ttl"],
        state_dir=values["state_dir"],
    )


def check_subnet_file_writable(path: str) -> None:
    """The subnet file is written after the lease is taken; find out now whether it can be, so a
    start that would fail leaves nothing in the store. Its directory may still be missing (it is
    created), but the nearest existing ancestor must be a writable directory."""
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(directory):
        directory = os.path.dirname(directory)
    if not os.path.isdir(directory):
        raise OverlayError(f"--subnet-file {path}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OverlayError(f"--subnet-file {path}: no permission to write in {directory}")


def setup_logging(verbosity: int) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbosity >= 2 else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("pyroute2", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def run_agent(options) -> None:
    """Run an agent until SIGTERM/SIGINT; then stop within a second, leaving state in place."""
    import signal

    import trio

    from .agent import Agent

    agent = Agent(options)
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        LOGGER.info("%s received; stopping (lease, routes and rules stay)",
                                    signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                await nursery.start(agent.run)
    finally:
        await agent.shutdown()


def cmd_run(ns: argparse.Namespace) -> int:
    from .runtime import tune_malloc

    tune_malloc()
    import trio


    values = _resolve(ns, dict(os.environ))
    if values["kube_subnet_mgr"]:
        raise OverlayError("--kube-subnet-mgr is not supported: overlay keeps leases in etcd only; "
                           "drop the flag and give --etcd-endpoints")
    options = build_options(values)
    options.validate()  # range errors come before anything is logged
    check_subnet_file_writable(options.subnet_file)
    setup_logging(values["v"])
    safe = {k: ("***" if k == "etcd_password" and v else v) for k, v in values.items()}
    LOGGER.info("overlay-core %s starting: %s", __version__, safe)
    trio.run(run_agent, options)
    LOGGER.info("exiting cleanly")
    return 0


def cmd_backends(ns: argparse.Namespace) -> int:
    from .plugins import installed_backends, installed_observers

    backends, observers = installed_backends(), installed_observers()
    if ns.json:
        print(json.dumps({"backends": [vars(b) for b in backends],
                          "plugins": [vars(p) for p in observers]}, indent=2))
        return 0
    if not backends:
        print("no backends installed; install one, for example: pip install overlay-vxlan")
    rows = [("TYPE", "DISTRIBUTION", "VERSION", "ENTRY POINT")]
    rows += [(b.name, b.distribution, b.version, b.target) for b in backends]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if observers:
        print("\nobserver plugins: " + ", ".join(f"{p.name} ({p.distribution} {p.version})" for p in observers))
    return 0


def cmd_config_check(ns: argparse.Namespace) -> int:
    """Everything the agent would refuse, as far as it is knowable offline (the external
    interface's MTU, for one, is not), plus typos the agent would silently ignore."""
    from .backend import check_backend_config
    from .config import check_top_level_keys, parse_config
    from .errors import BackendNotFoundError
    from .plugins import KNOWN_BACKENDS, installed_backends, load_backend_class

    try:
        text = sys.stdin.read() if ns.file == "-" else open(ns.file, encoding="utf-8").read()
    except OSError as exc:
        raise OverlayError(f"cannot read {ns.file}: {exc.strerror}") from None
    config = parse_config(text)
    check_top_level_keys(config)
    parts = []
    for rng in (config.ipv4, config.ipv6):
        if rng is not None:
            parts.append(f"{rng.network}: /{rng.subnet_len} subnets {rng.subnet_min} to "
                         f"{rng.subnet_max} ({rng.capacity} nodes)")
    note = ""
    try:
        backend_cls = load_backend_class(config.backend_type)
    except BackendNotFoundError:
        installed = {b.name for b in installed_backends()}
        if config.backend_type not in KNOWN_BACKENDS or config.backend_type in installed:
            raise  # unknown type, or installed but broken
        note = f" ({KNOWN_BACKENDS[config.backend_type]} is not installed here: its options were not checked)"
    else:
        check_backend_config(backend_cls, config)
    print(f"OK: {'; '.join(parts)}; backend {config.backend_type}{note}")
    return 0


def _ops_options(ns: argparse.Namespace):
    """``run``'s options from the same flags and ``FLANNELD_*`` variables; warnings only on stderr."""
    values = _resolve(ns, dict(os.environ))
    options = build_options(values)
    options.validate()
    logging.basicConfig(level=logging.DEBUG if values["v"] >= 2 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return options


def cmd_status(ns: argparse.Namespace) -> int:
    """Exit 0 when the agent is ready, 2 when it answers but is not ready (1: no agent, an error)."""
    from .ops.agent_http import read_report
    from .ops.status import render, summary

    options = _ops_options(ns)
    ready, facts = read_report(options.healthz_ip, options.healthz_port)
    info = summary(ready, facts)
    print(json.dumps(info, indent=2) if ns.json else "\n".join(render(info)))
    return 0 if ready else 2


def cmd_doctor(ns: argparse.Namespace) -> int:
    import trio

    from .ops.doctor import as_json, doctor, exit_status

    checks = trio.run(doctor, _ops_options(ns))
    print(json.dumps(as_json(checks), indent=2) if ns.json else "\n".join(c.line() for c in checks))
    return exit_status(checks)


def cmd_cleanup(ns: argparse.Namespace) -> int:
    """Exit 0 when everything found was removed (or nothing was found), 1 otherwise."""
    import trio

    from .ops.cleanup import NodeCleanup

    cleanup = NodeCleanup(_ops_options(ns), release_lease=ns.release_lease)
    try:
        outcome = trio.run(cleanup.run, ns.dry_run)
    finally:
        cleanup.close()
    verb = "would remove" if ns.dry_run else "removed"
    if not outcome.removed and not outcome.failed:
        print("nothing of overlay's found on this node")
    for what in outcome.removed:
        print(f"{verb} {what}")
    for what in outcome.failed:
        print(f"could not remove {what}")
    for note in outcome.notes:
        print(f"note: {note}")
    return 1 if outcome.failed else 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the line that matters and where to read more, not the
    whole usage first."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\nsee: {self.prog} --help\n")


def build_parser(manager=None, plugin_commands: bool = True) -> argparse.ArgumentParser:
    """The command line: built-in commands plus those plugins add (``overlay_register_commands``;
    the lab, from overlay-lab, is one). ``manager`` defaults to one holding the built-in and installed plugins.
    ``plugin_commands=False`` (``run``) skips loading plugins: the agent starts faster."""
    parser = _Parser(prog="overlay-core", allow_abbrev=False, description="Flannel-compatible overlay network agent")
    parser.add_argument("--version", "-version", action="version", version=f"overlay-core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run the agent on this node", allow_abbrev=False)
    run.add_argument("--version", "-version", action="version", version=f"overlay-core {__version__}")
    _add_run_flags(run)
    run.set_defaults(func=cmd_run, parser=run)

    backends = sub.add_parser("backends", help="list installed backends, their packages and versions")
    backends.add_argument("--json", action="store_true")
    backends.set_defaults(func=cmd_backends)

    config = sub.add_parser("config", help="network config tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    config_sub.required = True
    check = config_sub.add_parser("check", help="validate a network config file offline ('-' for stdin)")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check, parser=check)

    ops_help = {
        "status": "show the running agent's lease, store connection and peers (reads its /readyz)",
        "doctor": "check this node (sysctls, MTU, firewall, etcd, peers, kernel features); exit 0/1/2",
        "cleanup": "remove everything overlay made on this node (devices, routes, rules, helpers, subnet file)",
    }
    for name, func in (("status", cmd_status), ("doctor", cmd_doctor), ("cleanup", cmd_cleanup)):
        command = sub.add_parser(name, help=ops_help[name], allow_abbrev=False,
                                 description=ops_help[name] + "; takes run's flags and FLANNELD_* variables")
        _add_run_flags(command)
        if name == "cleanup":
            command.add_argument("--dry-run", action="store_true", help="only say what would be removed")
            command.add_argument("--release-lease", action="store_true",
                                 help="also delete this node's lease from etcd")
        else:
            command.add_argument("--json", action="store_true")
        command.set_defaults(func=func, parser=command)

    if not plugin_commands:
        return parser
    if manager is None:
        from .plugins import PluginManager

        manager = PluginManager()
        manager.load_observers()
        manager.load_commands()
    manager.pm.hook.overlay_register_commands(subparsers=sub)
    return parser


def _one_line(exc: BaseException) -> OverlayError | None:
    """The user-facing error inside ``exc`` (possibly an exception group), if any."""
    if isinstance(exc, OverlayError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _one_line(inner)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args and any(k.startswith("FLANNELD_") and v for k, v in os.environ.items()):
        args = ["run"]  # flanneld configured by its environment alone
    if args and args[0].startswith("-") and args[0] not in ("-h", "--help", "--version", "-version"):
        args.insert(0, "run")  # flanneld-style invocation: flags only
    parser = build_parser(plugin_commands=not args or args[0] != "run")
    ns, extra = parser.parse_known_args(args)
    if extra:  # reported by the command's own parser, so its --help is the one pointed to
        getattr(ns, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return ns.func(ns)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        found = _one_line(exc)
        if found is None:
            raise
        print(f"overlay-core: error: {found}", file=sys.stderr)
        return 1
