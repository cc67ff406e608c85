"""Unit tests for agent/filter.py: Consul's `?filter=` (go-bexpr) language over Consul JSON shapes."""

from __future__ import annotations

import random

import pytest

from agent.errors import BadRequest
from agent.filter import (
    MAX_EXPRESSION_BYTES,
    MAX_NESTING,
    Filter,
    FilterError,
    apply_filter,
    compile_filter,
)
from agent.filter_syntax import translate_re2

# A /v1/health/service/:service entry (CheckServiceNode), as our to_api() renders it.
HEALTH = {
    "Node": {"ID": "40e4a748", "Node": "foobar", "Address": "10.1.10.12", "Datacenter": "dc1",
             "TaggedAddresses": {"lan": "10.1.10.12", "wan": "10.1.10.12"},
             "Meta": {"instance_type": "t2.medium"}, "CreateIndex": 5, "ModifyIndex": 9},
    "Service": {"Kind": "", "ID": "redis", "Service": "redis", "Tags": ["primary", "v2"],
                "Address": "10.1.10.12", "Meta": {"redis_version": "4.0", "env": "prod", "a.b": "dotted"},
                "TaggedAddresses": {"lan": {"Address": "10.1.10.12", "Port": 8000}},
                "Port": 8000, "Weights": {"Passing": 10, "Warning": 1}, "EnableTagOverride": False,
                "Proxy": None, "Connect": {}, "CreateIndex": 10, "ModifyIndex": 10},
    "Checks": [
        {"Node": "foobar", "CheckID": "service:redis", "Name": "Service 'redis' check",
         "Status": "passing", "Notes": "", "Output": "", "ServiceID": "redis", "ServiceName": "redis",
         "ServiceTags": ["primary"]},
        {"Node": "foobar", "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "critical",
         "Notes": "", "Output": "Agent not live or unreachable", "ServiceID": "", "ServiceName": "",
         "ServiceTags": []},
    ],
}


def check(expression: str, item: dict = HEALTH) -> bool:
    return compile_filter(expression).matches(item)


# ------------------------------------------------------------------------------------------- operators


@pytest.mark.parametrize(("expression", "expected"), [
    # == and !=
    ('Service.Service == "redis"', True),
    ('Service.Service == "web"', False),
    ('Service.Service != "web"', True),
    ('Service.Service != "redis"', False),
    ("Service.Service == redis", True),  # bare word value
    ("Node.Node==foobar", True),  # no spaces around ==
    ('Node.Meta.instance_type == "t2.medium"', True),
    ('Service.TaggedAddresses.lan.Address == "10.1.10.12"', True),
    ("Service.Weights.Passing == 10", True),
    ("Service.Weights.Passing != 10", False),
    # in / not in / contains / not contains on a list
    ('"v2" in Service.Tags', True),
    ('"v3" in Service.Tags', False),
    ("v2 in Service.Tags", True),
    ('"v3" not in Service.Tags', True),
    ('"v2" not in Service.Tags', False),
    ('Service.Tags contains "primary"', True),
    ("Service.Tags contains v9", False),
    ('Service.Tags not contains "v9"', True),
    ('Service.Tags not contains "v2"', False),
    # ... on a map: key presence
    ('Service.Meta contains "env"', True),
    ('Service.Meta contains "prod"', False),
    ('"env" in Service.Meta', True),
    ('"nope" not in Service.Meta', True),
    # ... on a string: substring
    ('Service.Service contains "edi"', True),
    ('"edi" in Service.Service', True),
    ('Service.Service not contains "xyz"', True),
    # is empty / is not empty
    ("Service.Kind is empty", True),
    ("Service.Kind is not empty", False),
    ("Service.Tags is not empty", True),
    ("Service.Meta is empty", False),
    ("Service.Connect is empty", True),
    ("Service.Proxy is empty", True),  # JSON null counts as empty
    ("Node.Meta is not empty", True),
    # matches / not matches: unanchored search, RE2 syntax
    ('Service.Service matches "^re"', True),
    ('Service.Service matches "dis"', True),
    ('Service.Service matches "^dis"', False),
    ('Service.Service not matches "^web"', True),
    ('Node.Address matches `^10\\.1\\.`', True),
    ('Service.Meta.redis_version matches "^[[:digit:]]+\\\\.0\\\\z"', True),
    # map index syntax
    ('Service.Meta["a.b"] == "dotted"', True),
    ('Service.Meta["env"] == prod', True),
    ("Service.Meta[`env`] == prod", True),
    ('Service.TaggedAddresses["lan"].Port == 8000', True),
])
def test_operators(expression: str, expected: bool) -> None:
    assert check(expression) is expected


@pytest.mark.parametrize(("expression", "expected"), [
    # a list met on the way means "any element matches"
    ("Checks.Status == passing", True),
    ("Checks.Status == critical", True),
    ("Checks.Status == warning", False),
    ("Checks.Status != passing", True),  # some check is not passing
    ('Checks.CheckID == "serfHealth"', True),
    ("Checks.ServiceTags contains primary", True),
    ("Checks.ServiceTags is empty", True),  # serfHealth has no tags
    ('Checks.Output matches "not live"', True),
    ("not Checks.Status == critical", False),
])
def test_lists_are_any(expression: str, expected: bool) -> None:
    assert check(expression) is expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("Checks.Status == passing", False),
    ("Checks.Status != passing", False),  # no element at all: nothing matches
    ("Checks is empty", True),
])
def test_empty_list_matches_nothing(expression: str, expected: bool) -> None:
    assert check(expression, {**HEALTH, "Checks": []}) is expected


@pytest.mark.parametrize(("expression", "expected"), [
    # a missing key: nothing equals / contains / matches it, and it is empty
    ("Service.Meta.missing == x", False),
    ("Service.Meta.missing != x", True),
    ('"x" in Service.Meta.missing', False),
    ('"x" not in Service.Meta.missing', True),
    ("Service.Meta.missing contains x", False),
    ("Service.Meta.missing not contains x", True),
    ("Service.Meta.missing is empty", True),
    ("Service.Meta.missing is not empty", False),
    ('Service.Meta.missing matches "."', False),
    ('Service.Meta.missing not matches "."', True),
    ("Nope == x", False),  # unknown top-level field without known_fields: just missing
    ("Nope.Deeper.Still != x", True),
    ("Service.Proxy.DestinationServiceName == x", False),  # walks into a JSON null
])
def test_missing_fields(expression: str, expected: bool) -> None:
    assert check(expression) is expected


# -------------------------------------------------------------------------------------- typed values

TYPED = {"Port": 8000, "Neg": -5, "Enabled": True, "Off": False, "Ratio": 0.5, "Name": "8000",
         "Mixed": [1, "two", True, None, {"x": 1}]}


@pytest.mark.parametrize(("expression", "expected"), [
    ("Port == 8000", True),
    ('Port == "8000"', True),
    ("Port != 8001", True),
    ('Port == "0x1F40"', True),  # Go ParseInt base 0
    ('Port == "0o17500"', True),
    ('Port == "017500"', True),  # leading zero: octal
    ('Port == "0x1F_40"', True),
    ("Neg == -5", True),
    ("Neg == 5", False),
    ("Enabled == true", True),
    ('Enabled == "True"', True),
    ("Enabled == 1", True),
    ("Enabled == t", True),
    ("Enabled == false", False),
    ("Off == false", True),
    ("Off == 0", True),
    ("Off != true", True),
    ("Ratio == 0.5", True),
    ('Ratio == "5e-1"', True),
    ("Ratio == 1", False),
    ("Name == 8000", True),  # a number literal against a string field compares as text
    ("Name == 8000.0", False),
    ('"two" in Mixed', True),
    ("1 in Mixed", True),
    ('"true" in Mixed', True),  # coerced per element; elements it cannot become are skipped
    ("3 in Mixed", False),
    ("x in Mixed", False),
])
def test_values_coerce_to_the_field_type(expression: str, expected: bool) -> None:
    assert check(expression, TYPED) is expected


@pytest.mark.parametrize("expression", [
    "Port == abc",  # not an int
    'Port == "8_000"',  # Go: underscores only with a base prefix
    "Port == 8000.5",
    'Port == "99999999999999999999"',  # int64 overflow
    "Enabled == yes",
    "Ratio == half",
    "Port contains 8",  # in/contains on a number
    "Port is empty",
    'Port matches "8"',
    "Mixed == x",  # == on a list
    "Port.Deeper == 1",  # walking into a scalar
])
def test_type_errors_are_bad_requests(expression: str) -> None:
    flt = compile_filter(expression)
    with pytest.raises(FilterError):
        flt.matches(TYPED)


# ------------------------------------------------------------------------------------------- logic


@pytest.mark.parametrize(("expression", "expected"), [
    ('"v2" in Service.Tags and Service.Meta.env == "prod"', True),
    ('"v2" in Service.Tags and Service.Meta.env == "qa"', False),
    ('Service.Meta.env == "qa" or Node.Node == foobar', True),
    ("not Service.Service == redis", False),
    ("not not Service.Service == redis", True),
    ("not not not Service.Service == redis", False),
    ("not (Service.Service == redis)", False),
    ("not(Service.Service == redis)", False),  # lenient: no space needed after `not`
    ("(Node.Node == x)or(Node.Node == foobar)", True),
    ("(Service.Service == redis)", True),
    ("((Service.Service == redis))", True),
    # precedence: not > and > or
    ("Service.Service == web and Node.Node == x or Node.Node == foobar", True),
    ("Service.Service == web and (Node.Node == x or Node.Node == foobar)", False),
    ("Node.Node == foobar or Service.Service == web and Node.Node == x", True),
    ("(Node.Node == foobar or Service.Service == web) and Node.Node == x", False),
    ("not Service.Service == web and Node.Node == foobar", True),
    ("not (Service.Service == redis and Node.Node == x)", True),
    ("not Service.Service == redis or Node.Node == foobar", True),
    ("not Service.Service == redis and Node.Node == foobar", False),
    # newlines and tabs are whitespace
    ("Service.Service == redis\n\tand\r\nNode.Node == foobar", True),
])
def test_logic_and_precedence(expression: str, expected: bool) -> None:
    assert check(expression) is expected


def test_precedence_matches_python_on_random_expressions() -> None:
    """Python's not/and/or have bexpr's precedence, so a random expression must agree with eval()."""
    for seed in range(300):
        rng = random.Random(seed)
        values = {f"X{i}": rng.choice(["t", "f"]) for i in range(4)}

        def gen(depth: int, rng: random.Random = rng, values: dict[str, str] = values) -> tuple[str, str]:
            choice = rng.random()
            if depth > 3 or choice < 0.35:
                name = rng.choice(sorted(values))
                literal = rng.choice(["t", "f"])
                return f"{name} == {literal}", f"({values[name] == literal})"
            if choice < 0.5:
                inner_f, inner_p = gen(depth + 1)
                return f"not {inner_f}", f"not {inner_p}"
            if choice < 0.65:
                inner_f, inner_p = gen(depth + 1)
                return f"({inner_f})", f"({inner_p})"
            left_f, left_p = gen(depth + 1)
            right_f, right_p = gen(depth + 1)
            word = rng.choice(["and", "or"])
            return f"{left_f} {word} {right_f}", f"{left_p} {word} {right_p}"

        flt, py = gen(0)
        assert compile_filter(flt).matches(values) is eval(py), f"seed={seed} filter={flt!r} python={py!r}"


# ------------------------------------------------------------------------------- quoting and escapes

@pytest.mark.parametrize(("literal", "text"), [
    ('"plain"', "plain"),
    ('"tab\\there"', "tab\there"),
    ('"new\\nline"', "new\nline"),
    ('"back\\\\slash"', "back\\slash"),
    ('"say \\"hi\\""', 'say "hi"'),
    ('"\\x41\\102\\u00e9\\U0001F600"', "AB\u00e9\U0001f600"),
    ('"\\xc3\\xa9"', "\u00e9"),  # \x escapes are bytes, as in Go
    ('"\\a\\b\\f\\r\\v"', "\a\b\f\r\v"),
    ("`raw \\n stays`", "raw \\n stays"),
    ('`has "double" quotes`', 'has "double" quotes'),
    ('""', ""),
    ('"with spaces and and or not"', "with spaces and and or not"),
    ('"(paren)"', "(paren)"),
])
def test_string_literals(literal: str, text: str) -> None:
    assert check(f"Value == {literal}", {"Value": text})
    assert not check(f"Value == {literal}", {"Value": text + "x"})


@pytest.mark.parametrize(("expression", "expected"), [
    ("Value == and", True),  # keywords are fine as bare values
    ("Value == not", False),
    ("Value == empty or Value == and", True),
    ("not == x", True),  # ... and as field names
    ("in == y", True),
    ("not.deep == z", True),
    ("not in == y", False),  # go-bexpr's PEG reads `not (in == y)`
    ("not in Tags", True),  # ... and the value "not" in Tags
    ("not is empty", False),
    ("not not is not empty", False),
    ("not contains x", True),
])
def test_keywords_as_words(expression: str, expected: bool) -> None:
    item = {"Value": "and", "not": "x", "in": "y", "Tags": ["not"]}
    if "deep" in expression:
        item = {"not": {"deep": "z"}}
    assert check(expression, item) is expected


# --------------------------------------------------------------------------------- apply and shapes

SERVICES = {
    "web1": {"ID": "web1", "Service": "web", "Tags": ["v1"], "Meta": {"env": "qa"}, "Port": 80},
    "web2": {"ID": "web2", "Service": "web", "Tags": ["v2"], "Meta": {"env": "prod"}, "Port": 81},
    "db": {"ID": "db", "Service": "db", "Tags": [], "Meta": {}, "Port": 5432},
}


def test_apply_to_map_keeps_keys_and_order() -> None:
    out = compile_filter('Service == web or Meta.env == "prod"').apply(SERVICES)
    assert list(out) == ["web1", "web2"]
    assert out["web2"] is SERVICES["web2"]


def test_apply_to_list_keeps_order() -> None:
    items = list(SERVICES.values())
    assert compile_filter("Port != 80").apply(items) == [items[1], items[2]]
    assert compile_filter("Meta is empty").apply(items) == [items[2]]
    assert compile_filter('"v1" in Tags').apply(items) == [items[0]]


def test_apply_filter_treats_blank_as_no_filter() -> None:
    items = list(SERVICES.values())
    assert apply_filter(None, items) is items
    assert apply_filter("", SERVICES) is SERVICES
    assert apply_filter("   ", items) is items
    assert apply_filter("Port == 5432", items) == [items[2]]


def test_agent_checks_map() -> None:
    checks = {c["CheckID"]: c for c in HEALTH["Checks"]}
    assert list(compile_filter("ServiceTags contains primary").apply(checks)) == ["service:redis"]
    assert list(compile_filter('Status == critical and ServiceID == ""').apply(checks)) == ["serfHealth"]


def test_selector_missing_on_every_item_is_fine() -> None:
    assert compile_filter("Nothing.Here == 1").apply(list(SERVICES.values())) == []


def test_filter_is_reusable_and_has_repr() -> None:
    flt = compile_filter("Port == 80")
    assert isinstance(flt, Filter)
    assert [flt.matches(s) for s in SERVICES.values()] == [True, False, False]
    assert [flt.matches(s) for s in SERVICES.values()] == [True, False, False]
    assert "Port == 80" in repr(flt)


@pytest.mark.parametrize(("expression", "ok"), [
    ("Service.ID == x", True),
    ('Checks.Status == passing and "v2" in Service.Tags', True),
    ("Bogus == x", False),
    ('"x" in Bogus.Tags', False),
    ("Service.ID == x or not (Node.Node == y and Serv.ID == z)", False),
])
def test_known_fields(expression: str, ok: bool) -> None:
    fields = {"Node", "Service", "Checks"}
    if ok:
        compile_filter(expression, known_fields=fields)
    else:
        with pytest.raises(FilterError, match="is not valid"):
            compile_filter(expression, known_fields=fields)


# -------------------------------------------------------------------------------- errors (HTTP 400)


@pytest.mark.parametrize(("expression", "position", "problem"), [
    ("", "1:1 (0)", "expected an expression"),
    ("   ", "1:4 (3)", "expected an expression"),
    ("Service.Tags contains", "1:22 (21)", "expected a value"),
    ("Service.Port == ", "1:17 (16)", "expected a value"),
    ("Service.Port ==", "1:16 (15)", "found end of input"),
    ("Service.Port = 1", "1:14 (13)", "unexpected character '='"),
    ("Service.Port 80", "1:14 (13)", "expected an operator"),
    ("Service.Port == 80a", "1:17 (16)", "Invalid number literal"),
    ("Service.Port == 080", "1:17 (16)", "Invalid number literal"),
    ("Service.Port == 1.", "1:17 (16)", "Invalid number literal"),
    ("Port == 1 Port == 2", "1:11 (10)", 'expected "and", "or" or the end'),
    ("(Port == 1", "1:1 (0)", "Unmatched parentheses"),
    ("Port == 1)", "1:10 (9)", "Unmatched parentheses"),
    ("(Port == 1 Port", "1:12 (11)", 'expected "and", "or" or ")"'),
    ("()", "1:2 (1)", "expected a selector"),
    ("Port == 1 and", "1:14 (13)", "found end of input"),
    ("or Port == 1", "1:4 (3)", "expected an operator"),
    ('Name == "abc', "1:9 (8)", "Unterminated string literal"),
    ("Name == `abc", "1:9 (8)", "Unterminated string literal"),
    ('Name == "a\\qb"', "1:11 (10)", "Invalid escape sequence"),
    ('Name == "\\x4"', "1:10 (9)", "Invalid escape sequence"),
    ('Name == "\\uD800"', "1:10 (9)", "Invalid escape sequence"),
    ('Name == "\\400"', "1:10 (9)", "Invalid escape sequence"),
    ('Name == "line\nbreak"', "1:14 (13)", "newline"),
    ("Meta[1] == x", "1:6 (5)", "Invalid index"),
    ("Meta[env] == x", "1:6 (5)", "Invalid index"),
    ('Meta["env" == x', "1:12 (11)", "Unclosed index"),
    ("Meta. == x", "1:7 (6)", 'a field name after "."'),
    ('"v2" Tags', "1:6 (5)", 'expected "in" or "not in"'),
    ('"v2" in "Tags"', "1:9 (8)", "Invalid selector"),
    ("Tags is nonempty", "1:9 (8)", '"empty" or "not empty"'),
    ('Name matches "(unclosed"', "1:14 (13)", "Failed to compile regular expression"),
    ('Name matches "a{2,1}"', "1:14 (13)", "Failed to compile regular expression"),
    ("Name == x\nand Port ==", "2:12 (21)", "found end of input"),
    ("Port == 1 & Port == 2", "1:11 (10)", "unexpected character '&'"),
])
def test_syntax_errors_say_where_and_what(expression: str, position: str, problem: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(expression)
    message = str(info.value)
    assert message.startswith("Failed to create boolean expression evaluator: "), message
    assert f" {position}: " in message, message
    assert problem in message, message
    assert isinstance(info.value, BadRequest)
    assert info.value.offset == int(position.split("(")[1].rstrip(")"))


def test_length_limit() -> None:
    base = "Name == x"
    fits = " or ".join([base] * 400)[:MAX_EXPRESSION_BYTES]
    fits = fits[: fits.rfind(" or ")]
    compile_filter(fits)
    too_long = 'Name == "' + "a" * (MAX_EXPRESSION_BYTES - 9) + '"'
    assert len(too_long) == MAX_EXPRESSION_BYTES + 1
    with pytest.raises(FilterError, match="longer than 4096 bytes"):
        compile_filter(too_long)
    multibyte = 'Name == "' + "é" * 2044 + '"'  # 4098 bytes, 2054 characters
    with pytest.raises(FilterError, match="longer than"):
        compile_filter(multibyte)


def test_nesting_limit() -> None:
    ok = "(" * MAX_NESTING + "Name == x" + ")" * MAX_NESTING
    assert compile_filter(ok).matches({"Name": "x"})
    too_deep = "(" * (MAX_NESTING + 1) + "Name == x" + ")" * (MAX_NESTING + 1)
    with pytest.raises(FilterError, match="deeper than 64") as info:
        compile_filter(too_deep)
    assert info.value.offset == MAX_NESTING


def test_long_flat_chains_do_not_recurse() -> None:
    nots = "not " * 1000 + "Name == x"
    assert compile_filter(nots).matches({"Name": "x"})  # an even number of nots
    ors = " or ".join(f"Name == n{i}" for i in range(200))
    assert compile_filter(ors).matches({"Name": "n199"})
    ands = " and ".join("Name != y" for _ in range(250))
    assert compile_filter(ands).matches({"Name": "x"})


@pytest.mark.parametrize(("re2", "text", "found"), [
    ("^a\\z", "a", True),
    ("^a\\z", "a\n", False),  # \z is end of text, not before a final newline
    ("^[[:alpha:]]+[[:digit:]]$", "abc1", True),
    ("^[^[:space:]]+$", "no-spaces", True),
    ("^[[:upper:][:digit:]]+$", "AB12", True),
    ("(?<ver>v[0-9]+)", "v12", True),
    ("\\Qa.b\\E", "a.b", True),
    ("\\Qa.b\\E", "axb", False),
    ("[]a]", "]", True),
    ("[a&&b]", "&", True),
])
def test_re2_spellings(re2: str, text: str, found: bool) -> None:
    assert check(f"Value matches `{re2}`", {"Value": text}) is found


def test_translate_re2_leaves_python_compatible_patterns_alone() -> None:
    for pattern in ["^web-[0-9]+$", "(?i)prod", "a|b", "\\d{2,3}", "[a-z]", "(?P<x>y)", "(?:a)"]:
        assert translate_re2(pattern) == pattern


VALID = [
    '"v2" in Service.Tags and Service.Meta.env == "prod"',
    "Checks.Status != passing or not (Service.Port == 8000)",
    'Service.Meta["a.b"] matches `^d` and Service.Tags is not empty',
    "Service.Service not contains x or Node.Node == foobar",
]


def test_random_input_only_ever_raises_filter_error() -> None:
    """Fuzz: any text either compiles or fails with FilterError; evaluation likewise."""
    atoms = ["Service", "Checks", "Status", "Tags", "Meta", "Port", ".", "[", "]", "(", ")", " ", "==",
             "!=", "and", "or", "not", "in", "contains", "matches", "is", "empty", '"', "`", "\\", "x",
             "8000", "-", "0", "1.5", '"v2"', "passing", "\\n", "\\x4", "*", "é"]
    compiled = 0
    for seed in range(2000):
        rng = random.Random(seed)
        if seed % 2:
            text = "".join(rng.choice(atoms) + rng.choice(["", " "]) for _ in range(rng.randint(1, 12)))
        else:  # a valid expression with one character inserted, deleted or replaced
            text = rng.choice(VALID)
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(["", rng.choice(atoms)]) + text[at + rng.randint(0, 1):]
        try:
            assert compile_filter(text).matches(HEALTH) in (True, False)
            compiled += 1
        except FilterError:
            pass
        except Exception as err:  # pragma: no cover - the report names the input
            raise AssertionError(f"seed={seed} filter={text!r}: {err!r}") from err
    assert compiled > 200  # the fuzz reaches the evaluator too
