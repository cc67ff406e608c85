"""Bad health-check input through the API: a 4xx whose message names the problem, and no change."""

from __future__ import annotations

import pytest

from tests.integration.harness import AgentProcess

CLOSED = "http://127.0.0.1:1/health"  # nothing listens on port 1: the probe just fails

BAD_REGISTRATIONS = [
    # (path, body, words the message must contain, in lower case)
    ("/v1/agent/check/register", {"Name": "c", "TTL": "10s", "Intervall": "1s"}, ["intervall", "unknown field"]),
    ("/v1/agent/service/register", {"Name": "s", "Check": {"TTL": "10s", "Colour": "x"}},
     ["service.check.colour", "unknown field"]),
    ("/v1/agent/service/register", {"Name": "s", "Checks": [{"TTL": "10s"}, {"HTTP": CLOSED, "Interval": "0s"}]},
     ["checks[1].interval", "greater than 0"]),
    ("/v1/agent/check/register", {"Name": "c", "HTTP": CLOSED, "Interval": "-5s"}, ["interval", "negative"]),
    ("/v1/agent/check/register", {"Name": "c", "HTTP": CLOSED, "Interval": "0s"}, ["interval", "greater than 0"]),
    ("/v1/agent/check/register", {"Name": "c", "TCP": "127.0.0.1:1", "Interval": 0}, ["interval", "greater than 0"]),
    ("/v1/agent/check/register", {"Name": "c", "HTTP": CLOSED}, ["interval is required", "http"]),
    ("/v1/agent/check/register", {"Name": "c", "HTTP": CLOSED, "Interval": "soon"}, ["interval", "invalid duration"]),
    ("/v1/agent/check/register", {"Name": "c", "TCP": "127.0.0.1:1", "Interval": "10s", "Timeout": "-1s"},
     ["timeout", "negative"]),
    ("/v1/agent/check/register", {"Name": "c", "TTL": "-1s"}, ["ttl", "negative"]),
    ("/v1/agent/check/register", {"Name": "c", "TTL": "10s", "Interval": "10s"}, ["ttl", "interval"]),
    ("/v1/agent/check/register", {"Name": "c", "TCP": "nohostport", "Interval": "10s"}, ["tcp", "host:port"]),
    ("/v1/agent/check/register", {"Name": "c", "HTTP": "not a url", "Interval": "10s"}, ["http", "url"]),
    ("/v1/agent/check/register", {"Name": "c", "TCP": "127.0.0.1:1", "HTTP": CLOSED, "Interval": "10s"},
     ["only one type"]),
    ("/v1/agent/check/register", {"Name": "c"}, ["exactly one of"]),
    ("/v1/agent/check/register", {"Name": "c", "TTL": "10s", "FailuresBeforeCritical": -1},
     ["failuresbeforecritical", "at least 0"]),
    ("/v1/agent/check/register", {"Name": "c", "TTL": "10s", "FailuresBeforeCritical": 1,
                                  "FailuresBeforeWarning": 3}, ["failures_before_warning", "must not exceed"]),
    ("/v1/agent/check/register", {"Name": "c", "TTL": "10s", "Status": "fine"}, ["status", "fine"]),
    ("/v1/agent/check/register", {"Name": "c", "TTL": "10s", "DeregisterCriticalServiceAfter": "-1m"},
     ["deregistercriticalserviceafter", "negative"]),
    ("/v1/agent/check/register", {"Name": "c", "Script": "echo hi", "Interval": "10s"}, ["script", "args"]),
    ("/v1/agent/check/register", {"Name": "c", "Args": ["/bin/true"], "Interval": "10s"},
     ["scripts are disabled", "enable_script_checks"]),
    ("/v1/agent/check/register", {"Name": "c", "ServiceID": "ghost", "TTL": "10s"}, ["ghost"]),
]


def snapshot(agent: AgentProcess) -> tuple:
    return agent.get("/v1/agent/checks").json(), agent.get("/v1/agent/services").json()


@pytest.mark.parametrize(("path", "body", "words"), BAD_REGISTRATIONS,
                         ids=[f"{i}-{p.rsplit('/', 1)[-1]}" for i, (p, _, _) in enumerate(BAD_REGISTRATIONS)])
def test_bad_check_definitions_are_400_and_change_nothing(dev_agent: AgentProcess, path: str, body: dict,
                                                          words: list[str]) -> None:
    before = snapshot(dev_agent)
    reply = dev_agent.put(path, body)
    assert reply.status == 400, (reply.status, reply.text)
    assert reply.headers["Content-Type"].startswith("text/plain")
    for word in words:
        assert word in reply.text.lower(), (word, reply.text)
    assert snapshot(dev_agent) == before


@pytest.fixture(scope="module")
def ttl_and_http(dev_agent: AgentProcess) -> AgentProcess:
    assert dev_agent.put("/v1/agent/check/register", {"Name": "bi-ttl", "TTL": "10m"}).status == 200
    body = {"Name": "bi-http", "HTTP": CLOSED, "Interval": "1h"}
    assert dev_agent.put("/v1/agent/check/register", body).status == 200
    return dev_agent


@pytest.mark.parametrize("verb", ["pass", "warn", "fail"])
def test_ttl_verbs_on_unknown_and_non_ttl_checks(ttl_and_http: AgentProcess, verb: str) -> None:
    unknown = ttl_and_http.put(f"/v1/agent/check/{verb}/ghost")
    assert (unknown.status, unknown.text) == (404, 'Unknown check ID "ghost"')
    not_ttl = ttl_and_http.put(f"/v1/agent/check/{verb}/bi-http")
    assert not_ttl.status == 400 and "does not have associated TTL" in not_ttl.text


BAD_UPDATES = [
    ("ghost", {"Status": "passing"}, 404, 'unknown check id "ghost"'),
    ("bi-http", {"Status": "passing"}, 400, "does not have associated ttl"),
    ("bi-ttl", {"Status": "fine"}, 400, 'invalid check status: "fine"'),
    ("bi-ttl", {"Output": "no status"}, 400, "invalid check status"),
    ("bi-ttl", {"Status": "passing", "Oops": 1}, 400, "unknown field 'oops'"),
    ("bi-ttl", {"Status": "passing", "Output": 5}, 400, "output must be a string"),
    ("bi-ttl", [1], 400, "expected a json object"),
]


@pytest.mark.parametrize(("check_id", "body", "status", "words"), BAD_UPDATES)
def test_bad_ttl_updates(ttl_and_http: AgentProcess, check_id: str, body: object, status: int,
                         words: str) -> None:
    before = ttl_and_http.get("/v1/agent/checks").json()["bi-ttl"]
    reply = ttl_and_http.put(f"/v1/agent/check/update/{check_id}", body)
    assert reply.status == status and words in reply.text.lower(), (reply.status, reply.text)
    assert ttl_and_http.get("/v1/agent/checks").json()["bi-ttl"] == before


def test_malformed_update_body(ttl_and_http: AgentProcess) -> None:
    reply = ttl_and_http.put("/v1/agent/check/update/bi-ttl", raw=b"{not json")
    assert reply.status == 400 and "decode" in reply.text.lower()


def test_unknown_check_deregister_and_history(ttl_and_http: AgentProcess) -> None:
    gone = ttl_and_http.put("/v1/agent/check/deregister/ghost")
    assert (gone.status, gone.text) == (404, 'Unknown check ID "ghost"')
    history = ttl_and_http.get("/v1/agent/check/history/ghost")
    assert (history.status, history.text) == (404, 'Unknown check ID "ghost"')
    wrong_method = ttl_and_http.put("/v1/agent/check/history/bi-ttl")
    assert wrong_method.status == 405
