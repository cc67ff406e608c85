"""The HTTP read fast path answers exactly what aiohttp answers, and hands off everything else."""

from __future__ import annotations

import json
import socket

from tests.integration.harness import AgentProcess
from tests.promtext import parse, value


def exchange(port: int, payload: bytes, responses: int) -> list[tuple[dict[str, str], bytes]]:
    """Send raw bytes on one keep-alive connection; read `responses` HTTP responses."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        out = []
        while len(out) < responses:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            data += chunk
            while True:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    break
                lines = data[:end].decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                headers["status"] = lines[0].split()[1]
                length = int(headers["content-length"])
                if len(data) < end + 4 + length:
                    break
                out.append((headers, data[end + 4:end + 4 + length]))
                data = data[end + 4 + length:]
    return out


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def test_fast_answers_match_aiohttp_and_follow_writes(dev_agent: AgentProcess) -> None:
    dev_agent.put("/v1/catalog/register", {"Node": "fp-1", "Address": "192.0.2.1",
                                           "Service": {"Service": "fast", "Port": 1}})
    path = "/v1/catalog/service/fast"
    first = dev_agent.get(path)  # through aiohttp: fills the cache
    replies = exchange(dev_agent.http_port, get(path) * 3, 3)  # pipelined, served by the fast path
    for headers, body in replies:
        assert headers["status"] == "200" and body == first.body
        assert headers["x-consul-index"] == first.headers["X-Consul-Index"]
        assert headers["content-type"] == first.headers["Content-Type"]
        assert headers["x-consul-knownleader"] == "true"
    dev_agent.put("/v1/catalog/register", {"Node": "fp-2", "Address": "192.0.2.2",
                                           "Service": {"Service": "fast", "Port": 2}})
    (headers, body), = exchange(dev_agent.http_port, get(path), 1)
    assert int(headers["x-consul-index"]) > int(first.headers["X-Consul-Index"])
    assert sorted(row["Node"] for row in json.loads(body)) == ["fp-1", "fp-2"]
    assert body == dev_agent.get(path).body


def test_other_requests_are_handed_to_aiohttp_on_the_same_connection(dev_agent: AgentProcess) -> None:
    path = "/v1/catalog/service/fast2"
    dev_agent.get(path)
    index = dev_agent.get(path).headers["X-Consul-Index"]
    body = json.dumps({"Node": "fp-3", "Address": "192.0.2.3", "Service": {"Service": "fast2", "Port": 3}})
    put = (f"PUT /v1/catalog/register HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
    # fast GET, then a PUT (hand-off), then a GET answered by aiohttp, then a 404 and a bad index
    payload = get(path) + put + get(f"{path}?index={index}&wait=5s") + get("/v1/nope") + get(f"{path}?index=x")
    replies = exchange(dev_agent.http_port, payload, 5)
    assert [h["status"] for h, _ in replies] == ["200", "200", "200", "404", "400"]
    assert replies[0][1] == b"[]" and replies[1][1] == b"true"
    assert [row["Node"] for row in json.loads(replies[2][1])] == ["fp-3"]


def put(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"PUT {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *headers]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def fast_served(agent: AgentProcess) -> float:
    return value(parse(agent.get("/v1/agent/metrics?format=prometheus").text), "consul_api_http_fast_path")


def test_a_plain_kv_write_answers_what_aiohttp_answers(dev_agent: AgentProcess) -> None:
    slow = dev_agent.put("/v1/kv/fast/slow?flags=0", raw=b"one")  # a query string: aiohttp's handler
    served = fast_served(dev_agent)
    (headers, body), = exchange(dev_agent.http_port, put("/v1/kv/fast/plain", b"two"), 1)
    assert fast_served(dev_agent) == served + 1
    assert (headers["status"], body) == ("200", slow.body) == ("200", b"true")
    assert headers["content-type"] == slow.headers["Content-Type"]
    plain = dev_agent.get("/v1/kv/fast/plain").json()[0]  # type: ignore[index]
    assert (plain["Key"], plain["Flags"], plain.get("Session")) == ("fast/plain", 0, None)
    assert dev_agent.get("/v1/kv/fast/plain?raw").body == b"two"


def test_pipelined_writes_and_reads_are_answered_in_order(dev_agent: AgentProcess) -> None:
    dev_agent.put("/v1/kv/order/k", raw=b"v0")
    path = "/v1/kv/order/k"
    dev_agent.get(path)  # the read is cached: the GETs below are fast too
    payload = (put(path, b"v1") + get(f"{path}?raw") + put(path, b"v2") + put(path, b"v3") + get(f"{path}?raw")
               + put(f"{path}?cas=1", b"lost") + put(path, b"v4") + get(f"{path}?raw"))
    replies = exchange(dev_agent.http_port, payload, 8)
    assert [h["status"] for h, _ in replies] == ["200"] * 8
    assert [body for _, body in replies] == [b"true", b"v1", b"true", b"true", b"v3", b"false", b"true", b"v4"]


def test_a_body_sent_in_pieces_and_refused_writes_change_nothing(dev_agent: AgentProcess) -> None:
    import time

    with socket.create_connection(("127.0.0.1", dev_agent.http_port), timeout=10) as sock:
        request = put("/v1/kv/pieces/k", b"x" * 5000)
        for i in range(0, len(request), 1500):
            sock.sendall(request[i:i + 1500])
            time.sleep(0.01)
        assert sock.recv(65536).endswith(b"\r\n\r\ntrue")
    assert dev_agent.get("/v1/kv/pieces/k?raw").body == b"x" * 5000
    refused = put("/v1/kv/pieces/a/../k", b"evil") + put("/v1/kv/pieces/big", b"y" * (512 * 1024 + 1))
    replies = exchange(dev_agent.http_port, refused, 2)
    assert [h["status"] for h, _ in replies] == ["400", "413"]
    assert b"'..'" in replies[0][1]
    assert dev_agent.get("/v1/kv/pieces/k?raw").body == b"x" * 5000
    assert dev_agent.get("/v1/kv/pieces/big").status == 404


def test_a_plain_kv_read_answers_what_aiohttp_answers(dev_agent: AgentProcess) -> None:
    dev_agent.put("/v1/kv/fastread/k", raw=b"value")
    for fast_query, slow_query in (("", "?cached="), ("?stale", "?stale="), ("?consistent", "?consistent=")):
        slow = dev_agent.get(f"/v1/kv/fastread/k{slow_query}")  # not a form the fast path takes
        served = fast_served(dev_agent)
        (headers, body), = exchange(dev_agent.http_port, get(f"/v1/kv/fastread/k{fast_query}"), 1)
        assert fast_served(dev_agent) == served + 1
        assert (headers["status"], body) == ("200", slow.body)
        for name in ("Content-Type", "X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact",
                     "X-Consul-Effective-Consistency"):
            assert headers[name.lower()] == slow.headers[name], (fast_query, name)
    # a missing key: the 404 aiohttp sends, on the same connection as fast answers
    slow_missing = dev_agent.get("/v1/kv/fastread/none?cached=")
    replies = exchange(dev_agent.http_port, get("/v1/kv/fastread/k") + get("/v1/kv/fastread/none")
                       + get("/v1/kv/fastread/k"), 3)
    assert [h["status"] for h, _ in replies] == ["200", "404", "200"]
    assert slow_missing.status == 404 and replies[1][1] == slow_missing.body == b""
    for name in ("X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-Effective-Consistency"):
        assert replies[1][0][name.lower()] == slow_missing.headers[name], name
    assert "content-type" not in replies[1][0] and "Content-Type" not in slow_missing.headers


def test_a_blocking_kv_read_parks_on_the_fast_path_until_its_key_changes(dev_agent: AgentProcess) -> None:
    import threading
    import time

    dev_agent.put("/v1/kv/fastwait/k", raw=b"v1")
    index = int(dev_agent.get("/v1/kv/fastwait/k").headers["X-Consul-Index"])
    timed_out = exchange(dev_agent.http_port, get(f"/v1/kv/fastwait/k?index={index}&wait=200ms"), 1)
    assert timed_out[0][0]["x-consul-index"] == str(index)          # the wait ran out: same index
    served = fast_served(dev_agent)
    threading.Timer(0.5, lambda: dev_agent.put("/v1/kv/fastwait/k", raw=b"v2")).start()
    started = time.monotonic()
    (headers, body), = exchange(dev_agent.http_port, get(f"/v1/kv/fastwait/k?wait=30s&index={index}"), 1)
    assert 0.4 < time.monotonic() - started < 10
    assert int(headers["x-consul-index"]) > index and json.loads(body)[0]["Value"] == "djI="   # "v2"
    assert fast_served(dev_agent) == served + 1
    bad = exchange(dev_agent.http_port, get("/v1/kv/fastwait/k?index=x"), 1)   # aiohttp's 400
    assert bad[0][0]["status"] == "400" and bad[0][1] == b"Invalid index"
