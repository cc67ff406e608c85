"""agent.servicedef (+ agent.config_docs, agent.config_hcl): definition files with real line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config_docs import DocumentError, parse_text
from agent.errors import DefinitionError
from agent.servicedef import load_file, load_files
from checks.definition import CheckKind

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "services"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def lines(exc: pytest.ExceptionInfo[DefinitionError]) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in exc.value.problems]


def test_examples_load():
    files = sorted(EXAMPLES.iterdir())
    assert {p.name for p in files} >= {"web.yaml", "api.json", "db.yaml", "cache.hcl"}
    loaded = {d.path.name: d for d in load_files(files)}
    web = loaded["web.yaml"].services[0]
    assert web.service.service == "web" and web.checks[0].kind is CheckKind.HTTP
    assert web.checks[0].http.startswith("http://127.0.0.1:")
    assert loaded["api.json"].services[0].checks[0].kind is CheckKind.TTL
    assert loaded["db.yaml"].services[0].checks[0].kind is CheckKind.TCP
    assert loaded["cache.hcl"].services[0].service.meta == {"maxmemory": "256mb"}
    assert web.source == f"file:{EXAMPLES / 'web.yaml'}"


def test_yaml_errors_point_at_the_key_line(tmp_path):
    path = write(tmp_path, "web.yaml", """\
service:
  name: web
  port: abc
  checks:
    - name: ok
      ttl: 10s
    - http: http://127.0.0.1/
      interval: soon
extra: 1
""")
    with pytest.raises(DefinitionError) as exc:
        load_file(path)
    assert lines(exc) == [
        (3, "service.port: expected an integer, got 'abc'"),
        (8, "service.checks[1].interval: invalid duration 'soon' (use e.g. \"10s\", \"1m30s\")"),
        (9, 'unknown key "extra" (a definition file holds service, services, check or checks)'),
    ]
    assert str(exc.value.problems[0]).startswith(f"{path}:3: service.port")


def test_json_errors_point_at_the_key_line(tmp_path):
    path = write(tmp_path, "api.json", """{
  "service": {
    "Name": "api",
    "Port": 70000,
    "Check": {
      "TTL": "5s",
      "Interval": "1s"
    }
  }
}
""")
    with pytest.raises(DefinitionError) as exc:
        load_file(path)
    assert lines(exc) == [(4, "service.Port: must be between 0 and 65535, got 70000"),
                          (7, "service.Check.Interval: a ttl check must not have an interval")]


def test_hcl_blocks_lists_and_lines(tmp_path):
    path = write(tmp_path, "x.hcl", """\
# comment
service {
  name = "a"   // trailing
  tags = ["x", "y",]
  /* block
     comment */
  check { ttl = "5s" }
}
service {
  name = "b"
  port = "nope"
}
check {
  id = "mem"
  name = "Memory"
  ttl = "1m"
  notes = <<EOF
line one
EOF
}
""")
    with pytest.raises(DefinitionError) as exc:
        load_file(path)
    assert lines(exc) == [(11, "service[1].port: expected an integer, got 'nope'")]
    path.write_text(path.read_text().replace('"nope"', "8080"))
    defs = load_file(path)
    assert [s.service.id for s in defs.services] == ["a", "b"]
    assert defs.services[0].service.tags == ("x", "y")
    assert defs.checks[0].notes == "line one\n"


def test_services_list_and_node_checks(tmp_path):
    path = write(tmp_path, "many.yaml", """\
services:
  - name: a
  - name: b
    id: b-1
checks:
  - name: disk
    ttl: 1m
  - name: b-extra
    service_id: b-1
    tcp: 127.0.0.1:80
    interval: 5s
""")
    defs = load_file(path)
    assert [s.service.id for s in defs.services] == ["a", "b-1"]
    assert [(c.check_id, c.service_id) for c in defs.checks] == [("disk", ""), ("b-extra", "b-1")]


def test_duplicate_service_ids_name_both_places(tmp_path):
    path = write(tmp_path, "dup.yaml", "services:\n  - name: web\n  - name: other\n  - name: web\n")
    with pytest.raises(DefinitionError) as exc:
        load_file(path)
    assert lines(exc) == [(4, f"duplicate service id 'web': also defined at {path}:2")]
    one = write(tmp_path, "one.json", '{"service": {"name": "api"}}')
    two = write(tmp_path, "two.yaml", "# two\nservice:\n  name: api\n")
    with pytest.raises(DefinitionError) as exc:
        load_files([one, two])
    (problem,) = exc.value.problems
    assert (problem.path, problem.line) == (str(two), 2)
    assert f"also defined at {one}:1" in problem.message


def test_load_files_is_all_or_nothing_and_reports_every_file(tmp_path):
    good = write(tmp_path, "good.yaml", "service:\n  name: good\n")
    bad1 = write(tmp_path, "bad1.yaml", "service:\n  port: 1\n")
    bad2 = write(tmp_path, "bad2.json", "{not json")
    with pytest.raises(DefinitionError) as exc:
        load_files([good, bad1, bad2])
    assert {p.path for p in exc.value.problems} == {str(bad1), str(bad2)}


def test_strict_names_in_files(tmp_path):
    path = write(tmp_path, "n.yaml", "service:\n  name: my_service\n")
    with pytest.raises(DefinitionError, match="not a valid DNS label"):
        load_file(path)
    assert load_file(path, strict_names=False).services[0].service.service == "my_service"


@pytest.mark.parametrize(("name", "text", "line", "fragment"), [
    ("a.json", '{\n  "service": {\n    "name": "x",\n  }\n}', 4, "expected a quoted key"),
    ("b.json", '{"service": {"name": "x", "name": "y"}}', 1, "duplicate key"),
    ("c.yaml", "service:\n  name: x\n  name: y\n", 3, "duplicate key"),
    ("d.yaml", "service:\n  name: [x\n", 3, "invalid YAML"),
    ("e.json", "[1, 2]", 1, "must be an object"),
    ("f.hcl", 'service {\n  name = "x"\n', 3, "missing '}'"),
    ("g.hcl", 'service {\n  name = "x"\n  name = "y"\n}\n', 3, "duplicate key"),
])
def test_syntax_errors_have_lines(tmp_path, name, text, line, fragment):
    with pytest.raises(DefinitionError) as exc:
        load_file(write(tmp_path, name, text))
    (problem,) = exc.value.problems
    assert problem.line == line
    assert fragment in problem.message


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(DefinitionError, match="unknown file format"):
        load_file(write(tmp_path, "x.txt", "service: {}"))
    with pytest.raises(DefinitionError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")


def test_yaml_alias_bomb_is_refused():
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        levels.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    with pytest.raises(DocumentError, match="too many nodes"):
        parse_text("\n".join(levels), "yaml", "bomb.yaml")


def test_json_nesting_limit_and_number_forms():
    with pytest.raises(DocumentError, match="nesting"):
        parse_text('{"a": ' + "[" * 200 + "]" * 200 + "}", "json", "deep.json")
    with pytest.raises(DocumentError):
        parse_text('{"a": NaN}', "json", "nan.json")
    doc = parse_text('{"a": [1, 2.5, -3e2, true, null, "s\\u00e9"]}', "json", "ok.json")
    assert doc.value == {"a": [1, 2.5, -300.0, True, None, "sé"]}
    assert doc.lines["a[0]"] == 1


def test_empty_file_has_nothing(tmp_path):
    defs = load_file(write(tmp_path, "empty.yaml", "# nothing here\n"))
    assert defs.services == [] and defs.checks == []
