"""A small HCL (v1 subset) reader for config and definition files (layer 2-ish: pure, stdlib only).

Contract:
- `parse_hcl(text, name) -> Document` understands what Consul config/definition files use: `key =
  value`, blocks `key { ... }` (optionally labelled `key "label" { ... }` → nested map), strings with
  JSON escapes, heredocs (`<<EOF`), numbers, true/false, lists `[...]`, object literals `{ ... }`,
  optional commas between items, and `#`, `//`, `/* */` comments.
- A block key repeated turns into a list of objects (`service {} service {}`); any other repeated
  key is an error. Lines are recorded like agent.config_docs (key path → 1-based line).
- Syntax errors raise `DocumentError` with the line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from agent.config_docs import MAX_DEPTH, Document, DocumentError, LineIndex, join_path
from agent.errors import Problem

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+|\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<heredoc><<-?(?P<tag>[A-Za-z_][A-Za-z0-9_]*)[ \t]*\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.\-]*)
  | (?P<punct>[{}\[\]=,:])
""", re.VERBOSE | re.DOTALL)


@dataclass(slots=True)
class _Tok:
    kind: str
    text: str
    value: object
    pos: int


@dataclass(slots=True)
class _Node:
    """A parsed value: scalar, list of nodes, or object (list of (key, line, node) items)."""

    kind: str  # scalar | list | object
    value: object
    line: int


def parse_hcl(text: str, name: str) -> Document:
    parser = _Parser(text, name)
    items = parser.body(top=True, depth=0)
    lines: dict[str, int] = {}
    value = parser.build_object(items, "", lines)
    return Document(name, value, lines)


class _Parser:
    def __init__(self, text: str, name: str):
        self.name = name
        self.index = LineIndex(text)
        self.tokens = self._lex(text)
        self.at = 0

    def fail(self, pos: int, message: str) -> DocumentError:
        return DocumentError([Problem(self.name, self.index.line(pos), f"invalid HCL: {message}")])

    def _lex(self, text: str) -> list[_Tok]:
        out: list[_Tok] = []
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match:
                raise self.fail(pos, f"unexpected character {text[pos]!r}")
            kind = match.lastgroup if match.lastgroup != "tag" else "heredoc"
            if match.group("heredoc"):
                tag = match.group("tag")
                end = re.compile(rf"^[ \t]*{re.escape(tag)}[ \t]*$", re.MULTILINE).search(text, match.end())
                if not end:
                    raise self.fail(pos, f"heredoc <<{tag} is not terminated")
                out.append(_Tok("string", "heredoc", text[match.end():end.start()], pos))
                pos = end.end()
                continue
            if kind != "ws":
                raw = match.group(0)
                value: object = raw
                if kind == "string":
                    try:
                        value = json.loads(raw)
                    except ValueError:
                        raise self.fail(pos, "bad escape in string") from None
                elif kind == "number":
                    value = float(raw) if any(c in raw for c in ".eE") else int(raw)
                elif kind == "ident" and raw in ("true", "false"):
                    kind, value = "bool", raw == "true"
                out.append(_Tok(str(kind), raw, value, pos))
            pos = match.end()
        out.append(_Tok("eof", "", None, len(text)))
        return out

    def peek(self) -> _Tok:
        return self.tokens[self.at]

    def take(self) -> _Tok:
        tok = self.tokens[self.at]
        self.at += 1
        return tok

    def expect(self, text: str) -> _Tok:
        tok = self.take()
        if tok.text != text or tok.kind not in ("punct",):
            raise self.fail(tok.pos, f"expected {text!r}, got {tok.text or 'end of input'!r}")
        return tok

    def body(self, top: bool, depth: int) -> list[tuple[str, int, _Node]]:
        if depth > MAX_DEPTH:
            raise self.fail(self.peek().pos, "nesting too deep")
        items: list[tuple[str, int, _Node]] = []
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                if not top:
                    raise self.fail(tok.pos, "unexpected end of input (missing '}')")
                return items
            if tok.text == "}" and tok.kind == "punct":
                if top:
                    raise self.fail(tok.pos, "unexpected '}'")
                self.take()
                return items
            if tok.text == "," and tok.kind == "punct":
                self.take()
                continue
            if tok.kind not in ("ident", "string", "bool"):
                raise self.fail(tok.pos, f"expected a key, got {tok.text!r}")
            self.take()
            key, line = str(tok.value if tok.kind == "string" else tok.text), self.index.line(tok.pos)
            items.append((key, line, self.after_key(depth)))

    def after_key(self, depth: int) -> _Node:
        tok = self.peek()
        if tok.kind == "punct" and tok.text in ("=", ":"):
            self.take()
            return self.value(depth + 1)
        labels: list[tuple[str, int]] = []
        while self.peek().kind == "string" or self.peek().kind == "ident":
            label = self.take()
            labels.append((str(label.value), self.index.line(label.pos)))
        open_tok = self.expect("{")
        node = _Node("object", self.body(False, depth + 1), self.index.line(open_tok.pos))
        for label, line in reversed(labels):
            node = _Node("object", [(label, line, node)], line)
        return node

    def value(self, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise self.fail(self.peek().pos, "nesting too deep")
        tok = self.take()
        line = self.index.line(tok.pos)
        if tok.kind in ("string", "number", "bool"):
            return _Node("scalar", tok.value, line)
        if tok.kind == "punct" and tok.text == "{":
            return _Node("object", self.body(False, depth + 1), line)
        if tok.kind == "punct" and tok.text == "[":
            items: list[_Node] = []
            while True:
                if self.peek().kind == "punct" and self.peek().text == "]":
                    self.take()
                    return _Node("list", items, line)
                items.append(self.value(depth + 1))
                nxt = self.peek()
                if nxt.kind == "punct" and nxt.text == ",":
                    self.take()
                elif not (nxt.kind == "punct" and nxt.text == "]"):
                    raise self.fail(nxt.pos, f"expected ',' or ']', got {nxt.text or 'end of input'!r}")
        raise self.fail(tok.pos, f"expected a value, got {tok.text or 'end of input'!r}")

    # -- building plain data with a line map ------------------------------------------------------

    def build(self, node: _Node, path: str, lines: dict[str, int]) -> object:
        if node.kind == "scalar":
            return node.value
        if node.kind == "list":
            out = []
            assert isinstance(node.value, list)
            for index, item in enumerate(node.value):
                lines[join_path(path, index)] = item.line
                out.append(self.build(item, join_path(path, index), lines))
            return out
        assert isinstance(node.value, list)
        return self.build_object(node.value, path, lines)

    def build_object(self, items: list[tuple[str, int, _Node]], path: str,
                     lines: dict[str, int]) -> dict[str, object]:
        groups: dict[str, list[tuple[int, _Node]]] = {}
        for key, line, node in items:
            groups.setdefault(key, []).append((line, node))
        out: dict[str, object] = {}
        for key, entries in groups.items():
            child = join_path(path, key)
            lines[child] = entries[0][0]
            if len(entries) == 1:
                out[key] = self.build(entries[0][1], child, lines)
                continue
            if not all(node.kind == "object" for _, node in entries):
                line = entries[1][0]
                raise DocumentError([Problem(self.name, line, f"duplicate key {key!r}")])
            values = []
            for index, (line, node) in enumerate(entries):
                lines[join_path(child, index)] = line
                values.append(self.build(node, join_path(child, index), lines))
            out[key] = values
        return out
