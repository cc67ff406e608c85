"""Load the agent configuration: defaults → -dev → files in order → -hcl → flags (layer 2).

Contract:
- `load_config(argv) -> LoadedConfig(config, warnings)`; argv is what follows `waypost agent`.
  Raises `ConfigError` holding every problem at once, each `file:line: message` (flags: `command
  line: ...`). Nothing is half-loaded.
- `load_config_sources(files, flags)` does the same from an explicit, ordered file list (used by
  reload, which re-reads the same sources); `config_files(flags)` expands `-config-file` and
  `-config-dir` (files ending .json/.yaml/.yml/.hcl, lexical order, no recursion).
- Merge (reference §9.2): later scalars override, lists append, maps merge. Service/check
  definitions in config files (service/services/check/checks) are decoded by agent.servicedef with
  strict names and real lines; duplicate IDs across files and script checks without
  enable_(local_)script_checks are errors.
- Defaults live only in agent.config_model (`AgentConfig`, `DEV_OVERRIDES`), re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config_docs import FORMATS, Document, DocumentError, parse_text, read_document
from agent.config_flags import AgentFlags, parse_agent_flags
from agent.config_model import (
    DEV_OVERRIDES,
    Addresses,
    AgentConfig,
    DNSConfig,
    GossipConfig,
    HTTPConfig,
    Limits,
    Performance,
    Ports,
    SOAConfig,
    UIConfig,
)
from agent.config_schema import build, decode_partial, merge
from agent.errors import ConfigError, DefinitionError, Problem
from agent.servicedef import FileDefinitions, definitions_from, duplicate_problems
from checks.definition import CheckKind

__all__ = [
    "DEV_OVERRIDES", "Addresses", "AgentConfig", "AgentFlags", "DNSConfig", "GossipConfig", "HTTPConfig",
    "Limits", "LoadedConfig", "Performance", "Ports", "SOAConfig", "UIConfig", "config_files",
    "load_config", "load_config_sources", "parse_agent_flags",
]


@dataclass(slots=True)
class LoadedConfig:
    config: AgentConfig
    warnings: list[str] = field(default_factory=list)


def load_config(argv: list[str]) -> LoadedConfig:
    flags = parse_agent_flags(argv)
    return load_config_sources(config_files(flags), flags)


def config_files(flags: AgentFlags) -> list[Path]:
    files: list[Path] = []
    problems: list[Problem] = []
    for kind, name in flags["config_paths"]:
        path = Path(name)
        if kind == "file":
            if not path.is_file():
                problems.append(Problem(name, 0, "config file does not exist"))
            files.append(path)
            continue
        if not path.is_dir():
            problems.append(Problem(name, 0, "config directory does not exist"))
            continue
        files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FORMATS))
    if problems:
        raise ConfigError(problems)
    return files


def load_config_sources(files: list[Path], flags: AgentFlags) -> LoadedConfig:
    problems: list[Problem] = []
    warnings = list(flags["warnings"])
    partial: dict[str, Any] = dict(DEV_OVERRIDES) if flags["dev"] else {}
    definitions: list[FileDefinitions] = []
    docs: list[tuple[Path, Document]] = []
    for path in files:
        try:
            docs.append((path, read_document(path, flags["config_format"] or None)))
        except DocumentError as exc:
            problems.extend(exc.problems)
    for index, fragment in enumerate(flags["hcl"]):
        name = f"-hcl[{index}]"
        try:
            docs.append((Path(name), parse_text(fragment, "hcl", name)))
        except DocumentError as exc:
            problems.extend(exc.problems)
    for path, doc in docs:
        partial = merge(partial, decode_partial(doc, problems, warnings))
        try:
            definitions.append(definitions_from(doc, path, strict_names=True))
        except DefinitionError as exc:
            problems.extend(exc.problems)
    partial = merge(partial, decode_partial(Document("command line", flags["config"]), problems, warnings))
    problems.extend(duplicate_problems(definitions))
    if problems:
        raise ConfigError(problems)
    config: AgentConfig = build(partial)
    config.dev = flags["dev"]
    config.config_sources = [str(path) for path, _ in docs]
    for defs in definitions:
        config.services.extend(defs.services)
        config.checks.extend(defs.checks)
    problems = _finish(config, definitions)
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(config, warnings)


def _finish(config: AgentConfig, definitions: list[FileDefinitions]) -> list[Problem]:
    """Role-dependent defaults and the rules that span several keys."""
    problems = []

    def bad(message: str) -> None:
        problems.append(Problem("config", 0, message))

    if config.leave_on_terminate is None:
        config.leave_on_terminate = not config.server
    if config.skip_leave_on_interrupt is None:
        config.skip_leave_on_interrupt = config.server
    for name in ("domain", "alt_domain"):
        value = getattr(config, name)
        if value and not value.endswith("."):
            setattr(config, name, value + ".")
    if config.domain.strip(".") == "":
        bad("domain must not be empty")
    if config.alt_domain and config.alt_domain.lower() == config.domain.lower():
        bad("alt_domain must differ from domain")
    if config.bootstrap and config.bootstrap_expect:
        bad("bootstrap and bootstrap_expect are mutually exclusive")
    if (config.bootstrap or config.bootstrap_expect) and not config.server:
        bad("bootstrap and bootstrap_expect require server mode (-server)")
    if not config.dev and not config.data_dir:
        bad("data_dir is required (set -data-dir, or use -dev for an in-memory agent)")
    if not config.node_name:
        bad("node_name must not be empty")
    if config.max_query_time < config.default_query_time:
        bad("max_query_time must not be shorter than default_query_time")
    if not (config.enable_script_checks or config.enable_local_script_checks):
        for defs in definitions:
            checks = list(defs.checks) + [c for s in defs.services for c in s.checks]
            for check in checks:
                if check.kind in (CheckKind.SCRIPT, CheckKind.DOCKER):
                    line = defs.origins.get(f"check:{check.check_id}", 0)
                    problems.append(Problem(str(defs.path), line, f"check {check.check_id!r}: script checks "
                                            "are disabled; set enable_local_script_checks = true"))
    return problems
