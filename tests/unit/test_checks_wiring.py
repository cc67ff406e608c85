"""The check history table of `waypost checks history`, and the agent's internal check timing knobs."""

from __future__ import annotations

import io

import pytest

from agent.cli import main
from agent.cli_checks import OUTPUT_WIDTH, format_history
from agent.config_env import internal_check_timing
from agent.errors import ConfigError

ROWS = [
    {"Time": 0.0, "Old": "", "New": "critical", "Output": "", "Reason": "initial"},
    {"Time": 1.5, "Old": "critical", "New": "passing", "Output": "HTTP GET http://x/: 200 OK\nOutput: ok",
     "Reason": "probe"},
    {"Time": 62.25, "Old": "passing", "New": "critical", "Output": "x" * 200, "Reason": "failures_before_critical"},
]


def test_history_table_is_aligned_utc_and_one_line_per_transition() -> None:
    lines = format_history(ROWS).splitlines()
    assert lines[0].split() == ["TIME", "FROM", "TO", "REASON", "OUTPUT"]
    assert lines[1].split() == ["1970-01-01T00:00:00.000Z", "-", "critical", "initial"]
    assert lines[2].startswith("1970-01-01T00:00:01.500Z  critical  passing")
    assert lines[2].endswith("HTTP GET http://x/: 200 OK Output: ok")  # newlines flattened
    assert lines[3].endswith("x" * (OUTPUT_WIDTH - 3) + "...")
    assert lines[0].index("REASON") == lines[1].index("initial") == lines[3].index("failures_before_critical")
    assert format_history(ROWS, full=True).splitlines()[3].endswith("x" * 200)


def test_checks_history_usage_errors() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["checks", "history"], stdout=out, stderr=err, environ={}) == 1
    assert "Expected exactly one check ID" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert main(["checks", "history", "-h"], stdout=out, stderr=err, environ={}) == 0
    assert "Usage: waypost checks history" in out.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert main(["checks", "nope"], stdout=out, stderr=err, environ={}) == 1
    assert 'Unknown subcommand: "checks nope"' in err.getvalue()


def test_checks_history_agent_unreachable() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["checks", "history", "-http-addr", "127.0.0.1:1", "web"], stdout=out, stderr=err, environ={})
    assert code == 1 and err.getvalue().startswith("Error reading check history:")


def test_internal_check_timing_knobs() -> None:
    assert internal_check_timing({}) == {}
    got = internal_check_timing({"WAYPOST_TEST_CHECK_REAP_INTERVAL": "200ms",
                                 "WAYPOST_TEST_CHECK_DEREGISTER_MIN": "1s"})
    assert got == {"reap_interval": 0.2, "min_deregister_after": 1.0}
    for bad in ("soon", "0s", "-1s"):
        with pytest.raises(ConfigError) as failed:
            internal_check_timing({"WAYPOST_TEST_CHECK_REAP_INTERVAL": bad})
        assert "WAYPOST_TEST_CHECK_REAP_INTERVAL" in str(failed.value)
