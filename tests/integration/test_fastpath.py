"""The HTTP read fast path answers exactly what aiohttp answers, and hands off everything else."""

from __future__ import annotations

import json
import socket

from tests.integration.harness import AgentProcess


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
