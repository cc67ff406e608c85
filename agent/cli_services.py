"""CLI commands over definition files: services register/deregister and validate (layer 5).

Contract:
- `cmd_services_register(argv, ctx)`: files are read with `agent.servicedef.load_file` and each
  service is PUT to /v1/agent/service/register as `agent.encode.service_definition_to_api` builds
  it; flags (-id -name -address -port -tag -meta -tagged-address -kind) alone register one service,
  and alongside files fill what the files leave empty (Consul's CombineArgs). Prints
  `Registered service: NAME` per service.
- `cmd_services_deregister(argv, ctx)`: `-id ID` or files → PUT /v1/agent/service/deregister/:id,
  printing `Deregistered service: ID`.
- `cmd_validate(argv, ctx)`: no agent needed. Files holding only definition keys are checked with
  `agent.servicedef.load_files` (so a plain service file is valid on its own); directories are
  expanded to their files (lexical order), each classified like a lone file; other files go to
  `agent.config.load_config(["-config-file", path, ...])`, i.e. are checked exactly as the
  agent would load them (data_dir required, like Consul's validate). Valid:
  warnings on stderr, `Configuration is valid!` on stdout, exit 0. Invalid: every
  `path:line: message` on stderr, exit 1.
- File problems are shown as the loader reports them (`path:line: message` lines), exit 1.
"""

from __future__ import annotations

from pathlib import Path

from agent.cli_common import CommandFailed, Ctx, add_http_flags, make_client, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_http import AgentError
from agent.errors import Problem, ProblemsError

VALID_MESSAGE = "Configuration is valid!"


def _load_services(paths: list[str]) -> list[dict[str, object]]:
    """Registration bodies for every service in the files; all files are checked first."""
    from agent import servicedef  # lazy: written in parallel, and only file commands need it
    from agent.encode import service_definition_to_api

    bodies: list[dict[str, object]] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        try:
            loaded = servicedef.load_file(path)
        except ProblemsError as err:
            problems.extend(str(p) for p in err.problems)
            continue
        except OSError as err:
            problems.append(str(Problem(raw, 0, (err.strerror or str(err)).lower())))
            continue
        if not loaded.services:
            problems.append(str(Problem(raw, 0, "no service definitions found")))
        bodies.extend(service_definition_to_api(sd) for sd in loaded.services)
    if problems:
        raise CommandFailed("\n".join(problems))
    return bodies


def _parse_tagged(values: dict[str, str]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, addr_port in values.items():
        host, sep, port = addr_port.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise CommandFailed(f"Invalid Tagged Address: address {addr_port}: missing port in address")
        out[name] = {"Address": host.strip("[]"), "Port": int(port)}
    return out


def _flag_service(values: dict[str, object]) -> dict[str, object]:
    body: dict[str, object] = {}
    for flag, key in (("id", "ID"), ("name", "Name"), ("address", "Address"), ("kind", "Kind")):
        if values[flag]:
            body[key] = values[flag]
    if values["port"]:
        body["Port"] = values["port"]
    if values["tag"]:
        body["Tags"] = list(values["tag"])  # type: ignore[call-overload]
    if values["meta"]:
        body["Meta"] = dict(values["meta"])  # type: ignore[call-overload]
    tagged = values["tagged-address"]
    if isinstance(tagged, dict) and tagged:
        body["TaggedAddresses"] = _parse_tagged(tagged)
    return body


def _combine(file_body: dict[str, object], flags: dict[str, object]) -> dict[str, object]:
    """Consul's CombineArgs: flags fill empty scalars, merge into maps, append tags."""
    out = dict(file_body)
    for key in ("ID", "Name", "Address", "Port", "Kind"):
        if flags.get(key) and not out.get(key):
            out[key] = flags[key]
    for key in ("Meta", "TaggedAddresses"):
        if flags.get(key):
            merged = dict(out.get(key) or {})  # type: ignore[call-overload]
            merged.update(flags[key])  # type: ignore[call-overload]
            out[key] = merged
    if flags.get("Tags"):
        out["Tags"] = list(out.get("Tags") or []) + list(flags["Tags"])  # type: ignore[call-overload]
    return out


def cmd_services_register(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet(
        "services register",
        "Usage: waypost services register [options] [FILE...]\n\n"
        "  Register one or more services using the local agent API. Services can be registered\n"
        "  from definition files (YAML, JSON) or using flags.\n\n"
        "      $ waypost services register web.yaml\n"
        "      $ waypost services register -name=web -port=80 -tag=v1",
    )
    fs.string("id", "ID of the service to register (default: the -name value).")
    fs.string("name", "Name of the service to register for flag-based registration.")
    fs.string("address", "Address of the service to register.")
    fs.int("port", "Port of the service to register.")
    fs.string("kind", "The service's kind.")
    fs.multi("tag", "Tag to add to the service (repeatable).")
    fs.mapping("meta", "Metadata to set on the service, as key=value (repeatable).")
    fs.mapping("tagged-address", "Tagged address to set on the service, as key=host:port (repeatable).")
    add_http_flags(fs)
    values, args = parse_flags(fs, argv)
    if not args and not values["name"]:
        raise CommandFailed("Service registration requires at least one argument or flags.")
    if args and values["name"]:
        raise CommandFailed("Service registration requires arguments or -id, not both.")
    flag_body = _flag_service(values)
    bodies = [_combine(b, flag_body) for b in _load_services(args)] if args else [flag_body]
    client = make_client(values, ctx)
    for body in bodies:
        name = str(body.get("Name", ""))
        try:
            client.put("/v1/agent/service/register", body)
        except AgentError as err:
            raise CommandFailed(f'Error registering service "{name}": {err}') from None
        ctx.out(f"Registered service: {name}")
    return 0


def cmd_services_deregister(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet(
        "services deregister",
        "Usage: waypost services deregister [options] [FILE...]\n\n"
        "  Deregister one or more services that were previously registered with\n"
        "  'waypost services register', by ID (-id) or from the same files.",
    )
    fs.string("id", "ID to delete. This must not be set if arguments are given.")
    add_http_flags(fs)
    values, args = parse_flags(fs, argv)
    if not args and not values["id"]:
        raise CommandFailed("Service deregistration requires at least one argument or -id.")
    if args and values["id"]:
        raise CommandFailed("Service deregistration requires arguments or -id, not both.")
    ids = [str(values["id"])]
    if args:
        ids = [str(b.get("ID") or b.get("Name") or "") for b in _load_services(args)]
        ids = [i for i in ids if i]
    client = make_client(values, ctx)
    for service_id in ids:
        try:
            client.put(f"/v1/agent/service/deregister/{service_id}")
        except AgentError as err:
            raise CommandFailed(f'Error deregistering service "{service_id}": {err}') from None
        ctx.out(f"Deregistered service: {service_id}")
    return 0


def _is_definition_file(path: Path, fmt: str) -> bool:
    """True for a file holding only service/check definitions (no agent configuration keys)."""
    from agent.config_docs import read_document
    from agent.servicedef import DEFINITION_KEYS

    try:
        doc = read_document(path, fmt or None)
    except ProblemsError:
        return False  # the config loader reports the same syntax problems
    return isinstance(doc.value, dict) and bool(doc.value) and set(doc.value) <= set(DEFINITION_KEYS)


CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".hcl")


def _validate_problems(args: list[str], fmt: str) -> tuple[list[str], list[str]]:
    """(problems, warnings): definition-only files via servicedef, the rest as agent config."""
    from agent import servicedef
    from agent.config import load_config  # lazy: only validate needs the config loader

    config_argv: list[str] = []
    definition_files: list[Path] = []
    problems: list[str] = []
    expanded: list[str] = []
    for raw in args:
        path = Path(raw)
        if path.is_dir():  # each file of a directory is classified like a file named alone
            expanded += sorted(str(p) for p in path.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file())
        else:
            expanded.append(raw)
    for raw in expanded:
        path = Path(raw)
        if not path.exists():
            problems.append(str(Problem(raw, 0, "no such file or directory")))
        elif _is_definition_file(path, fmt):
            definition_files.append(path)
        else:
            config_argv += ["-config-file", raw]
    if problems:
        return problems, []
    warnings: list[str] = []
    if definition_files:
        try:
            servicedef.load_files(definition_files)
        except ProblemsError as err:
            problems += [str(p) for p in err.problems]
    if config_argv:
        if fmt:
            config_argv += ["-config-format", fmt]
        try:
            loaded = load_config(config_argv)
            warnings = [str(w) for w in getattr(loaded, "warnings", ())]
        except ProblemsError as err:
            problems += [str(p) for p in err.problems]
    return problems, warnings


def cmd_validate(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet(
        "validate",
        "Usage: waypost validate [options] FILE_OR_DIRECTORY...\n\n"
        "  Checks agent configuration and service definition files without an agent. A file that\n"
        "  holds only service/services/check/checks is a definition file; any other file and every\n"
        "  directory (.json, .yaml, .yml, .hcl in lexical order) is loaded as the agent would load\n"
        "  its configuration. Every problem is reported as path:line: message.",
    )
    fs.bool("quiet", 'When given, a successful run produces no output ("Configuration is valid!").')
    fs.string("config-format", "Files are in this format (json, yaml, hcl) irrespective of their extension.")
    values, args = parse_flags(fs, argv)
    if not args:
        raise CommandFailed("Must specify at least one config file or directory")
    problems, warnings = _validate_problems(args, str(values["config-format"]))
    if problems:
        raise CommandFailed("\n".join(problems))
    for warning in warnings:
        ctx.err(warning)
    if not values["quiet"]:
        ctx.out(VALID_MESSAGE)
    return 0
