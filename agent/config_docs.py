"""Config and definition documents with the line of every key (layer 2: stdlib + yaml).

Contract:
- `parse_text(text, fmt, name) -> Document` for fmt "json", "yaml" or "hcl"; `read_document(path,
  fmt=None)` picks the format from the extension (.json, .yaml/.yml, .hcl) unless `fmt` is given.
- A `Document` holds plain data (dicts, lists, str, int, float, bool, None) and `lines`: the 1-based
  line of each key or list item, keyed by field path (`service.checks[1].interval`), the same path
  shape `agent.decode` puts in its problems. `line_of(path)` falls back to the nearest parent.
- Syntax errors, files over `MAX_DOCUMENT_BYTES`, nesting deeper than `MAX_DEPTH`, YAML alias bombs
  and duplicate keys raise `DocumentError` (a `ProblemsError`) with `name:line: message`.
- YAML is read with the safe loader only (no object construction). Whitespace-only text is `{}`.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agent.errors import Problem, ProblemsError

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_YAML_NODES = 200_000
FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".hcl": "hcl"}


class DocumentError(ProblemsError):
    """A document that cannot be read or parsed (syntax, size, nesting)."""


@dataclass(slots=True)
class Document:
    name: str
    value: object
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int:
        """Line of `path` or of its nearest parent present in the document (0 when unknown)."""
        while path:
            line = self.lines.get(path)
            if line:
                return line
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                return 0
            path = path[:cut]
        return 0


def join_path(parent: str, key: object) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def format_of(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


def read_document(path: Path, fmt: str | None = None) -> Document:
    name = str(path)
    fmt = fmt or format_of(path)
    if fmt is None:
        raise DocumentError([Problem(name, 0, "unknown file format (use .json, .yaml, .yml or .hcl)")])
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            message = f"file too large ({size} bytes, max {MAX_DOCUMENT_BYTES})"
            raise DocumentError([Problem(name, 0, message)])
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError([Problem(name, 0, f"cannot read file: {exc.strerror or exc}")]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError([Problem(name, 0, "file is not valid UTF-8")]) from exc
    return parse_text(text, fmt, name)


def parse_text(text: str, fmt: str, name: str) -> Document:
    if len(text) > MAX_DOCUMENT_BYTES:
        raise DocumentError([Problem(name, 0, f"document too large (max {MAX_DOCUMENT_BYTES} bytes)")])
    if not text.strip():
        return Document(name, {})
    if fmt == "json":
        doc = _JsonScanner(text, name).document()
    elif fmt == "yaml":
        doc = _parse_yaml(text, name)
    elif fmt == "hcl":
        from agent.config_hcl import parse_hcl

        doc = parse_hcl(text, name)
    else:
        raise DocumentError([Problem(name, 0, f"unknown format {fmt!r} (json, yaml or hcl)")])
    if doc.value is None:
        doc.value = {}
    if not isinstance(doc.value, dict):
        raise DocumentError([Problem(name, 1, "the document must be an object/mapping at the top level")])
    return doc


class LineIndex:
    """Offset → 1-based line, by binary search over newline offsets."""

    def __init__(self, text: str):
        self._starts = [m.end() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset) + 1


# --- JSON -----------------------------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
_LITERALS = {"true": True, "false": False, "null": None}


class _JsonScanner:
    def __init__(self, text: str, name: str):
        self.text = text
        self.name = name
        self.index = LineIndex(text)
        self.lines: dict[str, int] = {}

    def fail(self, pos: int, message: str) -> DocumentError:
        return DocumentError([Problem(self.name, self.index.line(pos), message)])

    def document(self) -> Document:
        pos = _WS.match(self.text, 0).end()
        value, pos = self.value(pos, "", 0)
        pos = _WS.match(self.text, pos).end()
        if pos != len(self.text):
            raise self.fail(pos, "unexpected data after the JSON document")
        return Document(self.name, value, self.lines)

    def value(self, pos: int, path: str, depth: int) -> tuple[object, int]:
        if depth > MAX_DEPTH:
            raise self.fail(pos, f"nesting deeper than {MAX_DEPTH} levels")
        text = self.text
        char = text[pos : pos + 1]
        if char == "{":
            return self.object(pos + 1, path, depth)
        if char == "[":
            return self.array(pos + 1, path, depth)
        if char == '"':
            return self.string(pos)
        for word, literal in _LITERALS.items():
            if text.startswith(word, pos):
                return literal, pos + len(word)
        match = _NUMBER.match(text, pos)
        if match and match.end() > pos:
            number = match.group(0)
            if match.group(1) or match.group(2):
                return float(number), match.end()
            if len(number) > 400:
                raise self.fail(pos, "number too long")
            return int(number), match.end()
        if not char:
            raise self.fail(pos, "unexpected end of JSON input")
        raise self.fail(pos, f"invalid JSON: unexpected character {char!r}")

    def string(self, pos: int) -> tuple[str, int]:
        try:
            return json.decoder.scanstring(self.text, pos + 1, True)
        except json.JSONDecodeError as exc:
            raise self.fail(exc.pos, f"invalid JSON string: {exc.msg}") from None

    def object(self, pos: int, path: str, depth: int) -> tuple[dict, int]:
        text = self.text
        out: dict[str, object] = {}
        pos = _WS.match(text, pos).end()
        if text.startswith("}", pos):
            return out, pos + 1
        while True:
            if not text.startswith('"', pos):
                raise self.fail(pos, "invalid JSON: expected a quoted key")
            key_pos = pos
            key, pos = self.string(pos)
            if key in out:
                raise self.fail(key_pos, f"duplicate key {key!r}")
            child = join_path(path, key)
            self.lines[child] = self.index.line(key_pos)
            pos = _WS.match(text, pos).end()
            if not text.startswith(":", pos):
                raise self.fail(pos, "invalid JSON: expected ':' after key")
            pos = _WS.match(text, pos + 1).end()
            out[key], pos = self.value(pos, child, depth + 1)
            pos = _WS.match(text, pos).end()
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()
                continue
            if text.startswith("}", pos):
                return out, pos + 1
            raise self.fail(pos, "invalid JSON: expected ',' or '}'")

    def array(self, pos: int, path: str, depth: int) -> tuple[list, int]:
        text = self.text
        out: list[object] = []
        pos = _WS.match(text, pos).end()
        if text.startswith("]", pos):
            return out, pos + 1
        while True:
            child = join_path(path, len(out))
            self.lines[child] = self.index.line(pos)
            item, pos = self.value(pos, child, depth + 1)
            out.append(item)
            pos = _WS.match(text, pos).end()
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()
                continue
            if text.startswith("]", pos):
                return out, pos + 1
            raise self.fail(pos, "invalid JSON: expected ',' or ']'")


# --- YAML -----------------------------------------------------------------------------------------


def _parse_yaml(text: str, name: str) -> Document:
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return Document(name, {})
            lines: dict[str, int] = {}
            _yaml_lines(node, "", lines, [0], 0, name)
            value = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise DocumentError([Problem(name, line, f"invalid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise DocumentError([Problem(name, 0, f"invalid YAML: {exc}")]) from None
    return Document(name, value, lines)


def _yaml_lines(node: yaml.Node, path: str, lines: dict[str, int], count: list[int], depth: int,
                name: str) -> None:
    count[0] += 1
    if count[0] > MAX_YAML_NODES or depth > MAX_DEPTH:
        what = "too many nodes (alias expansion?)" if count[0] > MAX_YAML_NODES else "nesting too deep"
        raise DocumentError([Problem(name, node.start_mark.line + 1, f"YAML document has {what}")])
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise DocumentError([Problem(name, line, f"duplicate key {key!r}")])
            seen.add(key)
            child = join_path(path, key)
            lines.setdefault(child, line)
            _yaml_lines(value_node, child, lines, count, depth + 1, name)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = join_path(path, index)
            lines.setdefault(child, item.start_mark.line + 1)
            _yaml_lines(item, child, lines, count, depth + 1, name)
