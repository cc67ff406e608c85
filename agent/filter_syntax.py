"""Parser for Consul's `?filter=` language (go-bexpr grammar) into a small AST (layer 1: stdlib only).

Contract:
- `parse(expression) -> Expr` or `FilterError` naming the place (`line:col (offset)`) and the problem.
- Grammar (precedence `not` > `and` > `or`, parentheses group):
    or    := and ("or" and)*            and := not ("and" not)*
    not   := "not" not | "(" or ")" | match
    match := Selector ("==" | "!=") Value | Selector ["not"] ("contains" | "matches") Value
           | Selector "is" ["not"] "empty" | Value ["not"] "in" Selector
    Selector := Ident ("." Ident | "[" String "]")*      Ident := [a-zA-Z][a-zA-Z0-9_]*
    Value := String | Number | Selector (a bare word, taken as its text)
- Strings: "..." with Go escapes (\\n \\t \\xHH \\uHHHH \\ooo ...; `\\"` is also accepted) or `raw`.
  Numbers: -?(0|[1-9][0-9]*)(.[0-9]+)? and must end at whitespace, ")", "]" or the end.
- Values stay raw text; evaluation coerces them to the type of the field they meet.
- Bounds: expressions over MAX_EXPRESSION_BYTES or parentheses deeper than MAX_NESTING are rejected.
- Slightly more lenient than go-bexpr about whitespace around keywords (`not(`, `)and(`); every
  expression go-bexpr accepts parses to the same meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from agent.errors import BadRequest

MAX_EXPRESSION_BYTES = 4096
MAX_NESTING = 64

_PREFIX = "Failed to create boolean expression evaluator"


class FilterError(BadRequest):
    """A `?filter=` expression is invalid (HTTP 400). `offset` is the 0-based character position."""

    def __init__(self, problem: str, expression: str | None = None, offset: int | None = None):
        self.problem = problem
        self.offset = offset
        self.line = self.column = None
        if expression is not None and offset is not None:
            before = expression[:offset]
            self.line = before.count("\n") + 1
            self.column = offset - (before.rfind("\n") + 1) + 1
            super().__init__(f"{_PREFIX}: {self.line}:{self.column} ({offset}): {problem}")
        else:
            super().__init__(f"{_PREFIX}: {problem}")


class Op(Enum):
    """Base match operators; the negated forms set `Match.negate`."""

    EQUAL = "=="
    IN = "in"  # also `contains`, with the operands written the other way round
    EMPTY = "is empty"
    MATCHES = "matches"


@dataclass(frozen=True, slots=True)
class Match:
    selector: tuple[str, ...]
    op: Op
    negate: bool
    value: str | None  # raw text; None for is (not) empty
    regex: re.Pattern[str] | None
    offset: int

    @property
    def selector_text(self) -> str:
        return ".".join(self.selector)


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Expr, ...]


Expr = Match | Not | And | Or


# ---------------------------------------------------------------------------------------------- lexer


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # ident, string, number, op ("==", "!="), punct ("(", ")", "[", "]", "."), eof
    text: str  # identifier / operator text, or the decoded string, or the number text
    offset: int


_IDENT = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"'}
_WHITESPACE = " \t\r\n"


def _tokenize(src: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch in _WHITESPACE:
            i += 1
        elif ch in "()[].":
            tokens.append(_Token("punct", ch, i))
            i += 1
        elif src.startswith(("==", "!="), i):
            tokens.append(_Token("op", src[i:i + 2], i))
            i += 2
        elif ch == '"':
            text, end = _double_quoted(src, i)
            tokens.append(_Token("string", text, i))
            i = end
        elif ch == "`":
            end = src.find("`", i + 1)
            if end < 0:
                raise FilterError("Unterminated string literal", src, i)
            tokens.append(_Token("string", src[i + 1:end].replace("\r", ""), i))
            i = end + 1
        elif ch in "-0123456789":
            m = _NUMBER.match(src, i)
            if m is None or (m.end() < n and src[m.end()] not in _WHITESPACE + ")]"):
                raise FilterError("Invalid number literal", src, i)
            tokens.append(_Token("number", m.group(), i))
            i = m.end()
        elif m := _IDENT.match(src, i):
            tokens.append(_Token("ident", m.group(), i))
            i = m.end()
        else:
            raise FilterError(f"no match found, unexpected character {ch!r}", src, i)
    tokens.append(_Token("eof", "", n))
    return tokens


def _double_quoted(src: str, start: int) -> tuple[str, int]:
    """Decode a Go double-quoted string starting at `start`; return (text, offset after it)."""
    out = bytearray()
    i, n = start + 1, len(src)
    while i < n:
        ch = src[i]
        if ch == '"':
            return out.decode("utf-8", errors="surrogateescape"), i + 1
        if ch == "\n":
            raise FilterError("Invalid string literal: newline inside a quoted string", src, i)
        if ch != "\\":
            out += ch.encode("utf-8", errors="surrogatepass")
            i += 1
            continue
        i = _escape(src, i, out)
    raise FilterError("Unterminated string literal", src, start)


def _escape(src: str, i: int, out: bytearray) -> int:
    """Decode the escape at src[i] == '\\' into `out`; return the offset after it."""
    kind = src[i + 1] if i + 1 < len(src) else ""
    if kind in _SIMPLE_ESCAPES:
        out += _SIMPLE_ESCAPES[kind].encode()
        return i + 2
    if kind in "01234567" and kind:
        digits = src[i + 1:i + 4]
        if len(digits) == 3 and all(c in "01234567" for c in digits) and int(digits, 8) < 256:
            out.append(int(digits, 8))
            return i + 4
    elif kind in ("x", "u", "U"):
        width = {"x": 2, "u": 4, "U": 8}[kind]
        digits = src[i + 2:i + 2 + width]
        if len(digits) == width and all(c in "0123456789abcdefABCDEF" for c in digits):
            value = int(digits, 16)
            if kind == "x":
                out.append(value)
                return i + 2 + width
            if value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF:
                out += chr(value).encode()
                return i + 2 + width
    raise FilterError(f"Invalid escape sequence in string literal: {src[i:i + 2]!r}", src, i)


# --------------------------------------------------------------------------------------------- parser

_OPERATORS = ("an operator (==, !=, in, not in, contains, not contains, matches, not matches, "
              "is empty, is not empty)")
_VALUE = "a value (quoted string, number or bare word)"


def parse(expression: str) -> Expr:
    """Parse `expression` into an AST; raise FilterError saying where and what is wrong."""
    if len(expression.encode("utf-8", errors="surrogatepass")) > MAX_EXPRESSION_BYTES:
        raise FilterError(f"filter expression is longer than {MAX_EXPRESSION_BYTES} bytes")
    return _Parser(expression, _tokenize(expression)).parse()


class _Parser:
    def __init__(self, src: str, tokens: list[_Token]):
        self.src = src
        self.tokens = tokens
        self.i = 0

    # -- token helpers
    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    @staticmethod
    def word(tok: _Token, *words: str) -> bool:
        return tok.kind == "ident" and tok.text in words

    @staticmethod
    def punct(tok: _Token, char: str) -> bool:
        return tok.kind == "punct" and tok.text == char

    def fail(self, tok: _Token, expected: str) -> FilterError:
        found = "end of input" if tok.kind == "eof" else repr(self.src[tok.offset:tok.offset + 20].split()[0])
        return FilterError(f"no match found, expected {expected}, found {found}", self.src, tok.offset)

    # -- grammar
    def parse(self) -> Expr:
        if self.peek().kind == "eof":
            raise self.fail(self.peek(), "an expression")
        expr = self.or_expr(0)
        tok = self.peek()
        if self.punct(tok, ")"):
            raise FilterError("Unmatched parentheses", self.src, tok.offset)
        if tok.kind != "eof":
            raise self.fail(tok, '"and", "or" or the end of the expression')
        return expr

    def or_expr(self, depth: int) -> Expr:
        terms = [self.and_expr(depth)]
        while self.word(self.peek(), "or"):
            self.take()
            terms.append(self.and_expr(depth))
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def and_expr(self, depth: int) -> Expr:
        terms = [self.not_expr(depth)]
        while self.word(self.peek(), "and"):
            self.take()
            terms.append(self.not_expr(depth))
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def not_expr(self, depth: int) -> Expr:
        start, nots = self.i, 0  # iterative, so a long `not not not ...` chain costs no recursion
        while self.word(self.peek(), "not"):
            self.take()
            nots += 1
        try:
            expr = self.primary(depth)
        except FilterError as first:
            if nots == 0:
                raise
            # as go-bexpr's PEG backtracks: the last `not` may be a field or a bare value (`not == x`)
            self.i = start + nots - 1
            try:
                expr = self.primary(depth)
            except FilterError:
                raise first from None
            nots -= 1
        return Not(expr) if nots % 2 else expr

    def primary(self, depth: int) -> Expr:
        tok = self.peek()
        if not self.punct(tok, "("):
            return self.match()
        if depth >= MAX_NESTING:
            raise FilterError(f"parentheses nest deeper than {MAX_NESTING}", self.src, tok.offset)
        self.take()
        expr = self.or_expr(depth + 1)
        close = self.peek()
        if close.kind == "eof":
            raise FilterError("Unmatched parentheses", self.src, tok.offset)
        if not self.punct(close, ")"):
            raise self.fail(close, '"and", "or" or ")"')
        self.take()
        return expr

    def match(self) -> Match:
        start = self.peek()
        if start.kind in ("string", "number"):  # "value" [not] in Selector
            self.take()
            negate = self.word(self.peek(), "not") and self.word(self.peek(1), "in")
            if negate:
                self.take()
            if not self.word(self.peek(), "in"):
                raise self.fail(self.peek(), '"in" or "not in"')
            self.take()
            return Match(self.selector(), Op.IN, negate, start.text, None, start.offset)
        if start.kind != "ident":
            raise self.fail(start, 'a selector, a value or "("')
        path = self.path()
        tok = self.peek()
        if tok.kind == "op":
            self.take()
            return Match(path, Op.EQUAL, tok.text == "!=", self.value(), None, start.offset)
        if self.word(tok, "is"):
            self.take()
            negate = self.word(self.peek(), "not")
            if negate:
                self.take()
            if not self.word(self.peek(), "empty"):
                raise self.fail(self.peek(), '"empty" or "not empty"')
            self.take()
            return Match(path, Op.EMPTY, negate, None, None, start.offset)
        negate = self.word(tok, "not") and self.word(self.peek(1), "in", "contains", "matches")
        if negate:
            self.take()
            tok = self.peek()
        if self.word(tok, "in"):  # the bare word before `in` was a value, not a selector
            self.take()
            return Match(self.selector(), Op.IN, negate, ".".join(path), None, start.offset)
        if self.word(tok, "contains"):
            self.take()
            return Match(path, Op.IN, negate, self.value(), None, start.offset)
        if self.word(tok, "matches"):
            self.take()
            value_tok = self.peek()
            raw = self.value()
            return Match(path, Op.MATCHES, negate, raw, compile_regex(raw, self.src, value_tok.offset),
                         start.offset)
        raise self.fail(tok, _OPERATORS)

    def selector(self) -> tuple[str, ...]:
        tok = self.peek()
        if tok.kind != "ident":
            raise FilterError(f"Invalid selector: expected a field name, found {tok.kind}", self.src,
                              tok.offset)
        return self.path()

    def path(self) -> tuple[str, ...]:
        parts = [self.take().text]
        while True:
            tok = self.peek()
            if self.punct(tok, "."):
                self.take()
                seg = self.peek()
                if seg.kind != "ident":
                    raise self.fail(seg, 'a field name after "."')
                parts.append(self.take().text)
            elif self.punct(tok, "["):
                self.take()
                key = self.peek()
                if key.kind != "string":
                    raise FilterError("Invalid index: expected a quoted string", self.src, key.offset)
                self.take()
                if not self.punct(self.peek(), "]"):
                    raise FilterError("Unclosed index expression", self.src, self.peek().offset)
                self.take()
                parts.append(key.text)
            else:
                return tuple(parts)

    def value(self) -> str:
        tok = self.peek()
        if tok.kind in ("string", "number"):
            return self.take().text
        if tok.kind == "ident":
            return ".".join(self.path())
        raise self.fail(tok, _VALUE)


# ---------------------------------------------------------------------------------- regular expressions

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": r"\x00-\x7f", "blank": r"\t ",
    "cntrl": r"\x00-\x1f\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": r"!-/:-@\[-`{-~", "space": r"\t\n\v\f\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_POSIX = re.compile(r"\[:([a-z]+):\]")


def translate_re2(pattern: str) -> str:
    """Rewrite the RE2-only spellings Python's `re` lacks: \\z, \\Q...\\E, (?<name>, [[:alpha:]]."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        ch = pattern[i]
        if pattern.startswith("\\Q", i):
            end = pattern.find("\\E", i + 2)
            stop = n if end < 0 else end
            out.append(re.escape(pattern[i + 2:stop]))
            i = n if end < 0 else end + 2
        elif ch == "\\":
            pair = pattern[i:i + 2]
            out.append(r"\Z" if pair == r"\z" and not in_class else pair)
            i += 2
        elif in_class:
            posix = _POSIX.match(pattern, i)
            if posix and posix.group(1) in _POSIX_CLASSES:
                out.append(_POSIX_CLASSES[posix.group(1)])
                i = posix.end()
                continue
            if ch == "]":
                in_class = False
            out.append("\\" + ch if ch in "[&~|" else ch)
            i += 1
        elif ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):  # a leading ] is a literal
                out.append(r"\]")
                i += 1
        elif pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
            out.append("(?P<")
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def compile_regex(raw: str, src: str, offset: int) -> re.Pattern[str]:
    try:
        return re.compile(translate_re2(raw))
    except re.error as err:
        raise FilterError(f"Failed to compile regular expression {raw!r}: {err.msg}", src, offset) from None
