"""Consul's `?filter=` expressions (go-bexpr) evaluated against Consul JSON shapes (layer 1: stdlib only).

Contract:
- `compile_filter(expression, known_fields=None) -> Filter`; raises `FilterError` (a `BadRequest`, so
  HTTP 400) for syntax errors (message says `line:col (offset)` and what was expected), expressions over
  4 KiB, parentheses deeper than 64, bad regexes, and, when `known_fields` is given, selectors whose
  first segment is not one of them. An empty `?filter=` means "no filter": use `apply_filter`.
- `Filter.matches(item)` evaluates against the dict an endpoint returns (`to_api()` shapes).
  Selectors walk dict keys; a list met before the selector ends means "any element matches"
  (`Checks.Status == passing`). A missing key or a JSON null ends the walk: `==`, `in`, `contains`,
  `matches`, `is not empty` are false there and their negations true.
- Values are raw text coerced to the type of the field they meet (Go rules: ints take 0x/0o/0b,
  bools take 1/t/true/TRUE/...). `in`/`contains`: list → an element equals, map → key present,
  string → substring. `is empty` on strings, lists, maps. `matches` is an unanchored regex search.
- Comparisons Consul rejects by type (`Port == abc`, `Port contains 1`, `Tags == x`) raise
  `FilterError` during `matches`/`apply` too: callers evaluate inside the request and answer 400.
- `Filter.apply(items)` keeps matching elements of a list, or matching values of a map (keys kept),
  preserving order.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import TypeVar, overload

from agent.filter_syntax import (
    MAX_EXPRESSION_BYTES,
    MAX_NESTING,
    And,
    Expr,
    FilterError,
    Match,
    Not,
    Op,
    Or,
    parse,
)

__all__ = ["MAX_EXPRESSION_BYTES", "MAX_NESTING", "Filter", "FilterError", "apply_filter", "compile_filter"]

T = TypeVar("T")


def compile_filter(expression: str, known_fields: Collection[str] | None = None) -> Filter:
    """Parse `expression` once; the result is immutable and may be shared between requests."""
    ast = parse(expression)
    if known_fields is not None:
        for match in _matches_in(ast):
            if match.selector[0] not in known_fields:
                raise FilterError(f"Selector {match.selector_text!r} is not valid", expression, match.offset)
    return Filter(expression, ast)


@overload
def apply_filter(expression: str | None, items: list[T]) -> list[T]: ...
@overload
def apply_filter(expression: str | None, items: dict[str, T]) -> dict[str, T]: ...
def apply_filter(expression: str | None, items: list[T] | dict[str, T]) -> list[T] | dict[str, T]:
    """Filter `items` by `expression`; a missing or blank expression returns `items` unchanged."""
    if not expression or not expression.strip():
        return items
    return compile_filter(expression).apply(items)


class Filter:
    """A compiled filter expression."""

    __slots__ = ("ast", "expression")

    def __init__(self, expression: str, ast: Expr):
        self.expression = expression
        self.ast = ast

    def __repr__(self) -> str:
        return f"Filter({self.expression!r})"

    def matches(self, item: Mapping[str, object]) -> bool:
        return _evaluate(self.ast, item)

    @overload
    def apply(self, items: list[T]) -> list[T]: ...
    @overload
    def apply(self, items: dict[str, T]) -> dict[str, T]: ...
    def apply(self, items: list[T] | dict[str, T]) -> list[T] | dict[str, T]:
        if isinstance(items, dict):
            return {key: value for key, value in items.items() if _evaluate(self.ast, value)}
        return [item for item in items if _evaluate(self.ast, item)]


def _matches_in(expr: Expr) -> list[Match]:
    if isinstance(expr, Match):
        return [expr]
    if isinstance(expr, Not):
        return _matches_in(expr.operand)
    return [m for term in expr.terms for m in _matches_in(term)]


# ------------------------------------------------------------------------------------------ evaluation


def _evaluate(expr: Expr, item: object) -> bool:
    if isinstance(expr, Match):
        return _match(expr, item, 0)
    if isinstance(expr, And):
        return all(_evaluate(term, item) for term in expr.terms)
    if isinstance(expr, Or):
        return any(_evaluate(term, item) for term in expr.terms)
    return not _evaluate(expr.operand, item)


def _absent(match: Match) -> bool:
    """The answer when the selector leads nowhere: nothing equals, contains or matches a missing
    field, and a missing field is empty."""
    return (match.op is Op.EMPTY) != match.negate


def _match(match: Match, node: object, depth: int) -> bool:
    while depth < len(match.selector):
        if node is None:
            return _absent(match)
        if isinstance(node, Mapping):
            node = node.get(match.selector[depth], None)
            depth += 1
        elif isinstance(node, list | tuple):
            return any(_match(match, element, depth) for element in node)
        else:
            walked = ".".join(match.selector[:depth])
            raise FilterError(f"Value at selector {walked!r} does not support nested field selection")
    if node is None:
        return _absent(match)
    return _leaf(match, node) != match.negate


def _leaf(match: Match, value: object) -> bool:
    if match.op is Op.EQUAL:
        if isinstance(value, Mapping | list | tuple):
            raise _unsupported(match, value)
        return _coerce(match, value) == value
    if match.op is Op.IN:
        raw = match.value or ""
        if isinstance(value, Mapping):
            return raw in value
        if isinstance(value, list | tuple):
            return any(_element_equals(raw, element) for element in value)
        if isinstance(value, str):
            return raw in value
        raise _unsupported(match, value)
    if match.op is Op.EMPTY:
        if isinstance(value, str | Mapping | list | tuple):
            return len(value) == 0
        raise _unsupported(match, value)
    if isinstance(value, str) and match.regex is not None:
        return match.regex.search(value) is not None
    raise _unsupported(match, value)


def _unsupported(match: Match, value: object) -> FilterError:
    words = {Op.EQUAL: "!=" if match.negate else "==", Op.IN: "in/contains", Op.EMPTY: "is empty",
             Op.MATCHES: "matches"}
    return FilterError(f"Operator {words[match.op]!r} is not supported on the {_kind(value)} "
                       f"at selector {match.selector_text!r}")


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _coerce(match: Match, like: object) -> object:
    raw = match.value or ""
    try:
        return coerce(raw, like)
    except ValueError:
        raise FilterError(f"Cannot compare {raw!r} with the {_kind(like)} at selector "
                          f"{match.selector_text!r}") from None


def _element_equals(raw: str, element: object) -> bool:
    """One element of a list for `in`/`contains`: elements the value cannot be coerced to are skipped."""
    if isinstance(element, Mapping | list | tuple) or element is None:
        return False
    try:
        return coerce(raw, element) == element
    except ValueError:
        return False


# -------------------------------------------------------------------------------------- Go coercions

_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_GO_INT = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|0[0-7_]*|[1-9][0-9_]*)")
_INT64 = (-(1 << 63), (1 << 63) - 1)


def coerce(raw: str, like: object) -> object:
    """`raw` as a value of the same type as `like` (Go's strconv rules); ValueError if it is not one."""
    if isinstance(like, bool):
        if raw in _GO_TRUE:
            return True
        if raw in _GO_FALSE:
            return False
        raise ValueError(raw)
    if isinstance(like, int):
        return parse_go_int(raw)
    if isinstance(like, float):
        if raw != raw.strip() or "_" in raw:
            raise ValueError(raw)
        return float(raw)
    return raw


def parse_go_int(raw: str) -> int:
    """strconv.ParseInt(raw, 0, 64): decimal, 0x/0o/0b prefixes, a leading 0 for octal, `_` separators."""
    if not _GO_INT.fullmatch(raw) or raw.endswith("_") or "__" in raw:
        raise ValueError(raw)
    body = raw.lstrip("+-")
    sign = -1 if raw.startswith("-") else 1
    if "_" in body and not (len(body) > 1 and body[0] == "0"):
        raise ValueError(raw)  # Go allows underscores only with a base prefix
    if len(body) > 1 and body[0] == "0" and body[1] not in "xXoObB":
        number = int(body[1:].replace("_", ""), 8)
    else:
        number = int(body.replace("_", ""), 0)
    number *= sign
    if not _INT64[0] <= number <= _INT64[1]:
        raise ValueError(raw)
    return number
