"""Service and check definition files (reference §9.3) (layer 2: file I/O + yaml).

Contract:
- A file holds `service` (one object, or a list) and/or `services` (a list), and may hold node-level
  `check`/`checks` (with `service_id` to attach to a service), in YAML (.yaml/.yml), JSON (.json) or
  HCL (.hcl). Fields are those of the HTTP bodies, snake_case or CamelCase (agent.decode).
- `load_file(path, strict_names=True) -> FileDefinitions`; `load_files(paths)` is all-or-nothing and
  also rejects service/check IDs defined twice across the files. Both raise `DefinitionError` holding
  every problem at once, each as `Problem(file, line, "field.path: message")` with the real line of
  the offending key. Loaded services carry `source = "file:<path>"`.
- `definitions_from(doc, ...)` decodes the definition keys of an already-parsed document (agent config
  files hold them next to config keys); `duplicate_problems(defs)` is the cross-file ID check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.config_docs import Document, DocumentError, read_document
from agent.decode import decode_check, decode_service
from agent.decode_fields import describe, norm
from agent.errors import DefinitionError, Problem
from agent.types import ServiceDefinition
from checks.definition import CheckDefinition

DEFINITION_KEYS = ("service", "services", "check", "checks")


@dataclass(slots=True)
class FileDefinitions:
    path: Path
    services: list[ServiceDefinition] = field(default_factory=list)
    checks: list[CheckDefinition] = field(default_factory=list)
    # "service:<id>" / "check:<id>" → line of its definition, for cross-file duplicate reports
    origins: dict[str, int] = field(default_factory=dict)


def load_file(path: Path, *, strict_names: bool = True) -> FileDefinitions:
    try:
        doc = read_document(path)
    except DocumentError as exc:
        raise DefinitionError(exc.problems) from None
    assert isinstance(doc.value, dict)
    problems = [Problem(doc.name, doc.line_of(key), f'unknown key "{key}" (a definition file holds '
                        "service, services, check or checks)")
                for key in doc.value if key not in DEFINITION_KEYS]
    try:
        defs = definitions_from(doc, path, strict_names=strict_names)
    except DefinitionError as exc:
        problems.extend(exc.problems)
        problems.sort(key=lambda p: p.line)
        raise DefinitionError(problems) from None
    if problems:
        raise DefinitionError(problems)
    return defs


def load_files(paths: list[Path]) -> list[FileDefinitions]:
    problems: list[Problem] = []
    loaded: list[FileDefinitions] = []
    for path in paths:
        try:
            loaded.append(load_file(path))
        except DefinitionError as exc:
            problems.extend(exc.problems)
    problems.extend(duplicate_problems(loaded))
    if problems:
        raise DefinitionError(problems)
    return loaded


def definitions_from(doc: Document, path: Path, *, strict_names: bool = True) -> FileDefinitions:
    """Decode the service/services/check/checks keys of `doc` (other keys are the caller's)."""
    assert isinstance(doc.value, dict)
    out = FileDefinitions(path=path)
    problems: list[Problem] = []
    source = f"file:{path}"
    for key in ("service", "services"):
        for item_path, item in _items(doc, key, problems):
            try:
                defn = decode_service(item, strict_names=strict_names, path=item_path)  # type: ignore[arg-type]
            except DefinitionError as exc:
                problems.extend(_locate(doc, exc.problems))
                continue
            defn.source = source
            line = doc.line_of(item_path)
            _claim(out, problems, doc, f"service:{defn.service.id}", "service id", defn.service.id, line)
            check_paths = _embedded_check_paths(item, item_path)
            for index, check in enumerate(defn.checks):
                check_line = doc.line_of(check_paths[index]) if index < len(check_paths) else line
                _claim(out, problems, doc, f"check:{check.check_id}", "check id", check.check_id, check_line)
            out.services.append(defn)
    for key in ("check", "checks"):
        for item_path, item in _items(doc, key, problems):
            try:
                check = decode_check(item, path=item_path)  # type: ignore[arg-type]
            except DefinitionError as exc:
                problems.extend(_locate(doc, exc.problems))
                continue
            line = doc.line_of(item_path)
            _claim(out, problems, doc, f"check:{check.check_id}", "check id", check.check_id, line)
            out.checks.append(check)
    if problems:
        problems.sort(key=lambda p: p.line)
        raise DefinitionError(problems)
    return out


def duplicate_problems(defs: list[FileDefinitions]) -> list[Problem]:
    """Problems for service/check IDs defined in more than one of `defs` (in load order)."""
    seen: dict[str, tuple[Path, int]] = {}
    problems = []
    for defn in defs:
        for key, line in defn.origins.items():
            if key in seen:
                other_path, other_line = seen[key]
                kind, _, ident = key.partition(":")
                message = f"duplicate {kind} id {ident!r}: also defined at {other_path}:{other_line}"
                problems.append(Problem(str(defn.path), line, message))
            else:
                seen[key] = (defn.path, line)
    return problems


def _items(doc: Document, key: str, problems: list[Problem]) -> list[tuple[str, object]]:
    assert isinstance(doc.value, dict)
    value = doc.value.get(key)
    if value is None:
        return []
    if isinstance(value, dict):
        return [(key, value)]
    if isinstance(value, list):
        return [(f"{key}[{index}]", item) for index, item in enumerate(value)]
    problems.append(Problem(doc.name, doc.line_of(key), f"{key}: expected an object or a list, got "
                                                         f"{describe(value)}"))
    return []


def _embedded_check_paths(item: object, item_path: str) -> list[str]:
    """Paths of a service's embedded checks, in agent.decode's order (Check first, then Checks)."""
    paths: list[str] = []
    assert isinstance(item, dict)
    for wanted in ("check", "checks"):
        for key, value in item.items():
            if isinstance(key, str) and norm(key) == wanted:
                if isinstance(value, list):
                    paths.extend(f"{item_path}.{key}[{i}]" for i in range(len(value)))
                else:
                    paths.append(f"{item_path}.{key}")
    return paths


def _locate(doc: Document, problems: list[Problem]) -> list[Problem]:
    return [Problem(doc.name, doc.line_of(p.path), f"{p.path}: {p.message}") for p in problems]


def _claim(out: FileDefinitions, problems: list[Problem], doc: Document, key: str, what: str,
           ident: str, line: int) -> None:
    if key in out.origins:
        problems.append(Problem(doc.name, line, f"duplicate {what} {ident!r}: also defined at "
                                                f"{doc.name}:{out.origins[key]}"))
        return
    out.origins[key] = line
