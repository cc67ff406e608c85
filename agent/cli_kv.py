"""`waypost kv get|put|delete` with Consul's flags and output (layer 5).

Contract:
- `kv get KEY` prints the value; `-detailed` prints the entry's fields; `-recurse` prints
  `key:value` lines; `-keys` lists keys (rolled up at `-separator`, default "/"); `-base64`
  prints values base64-encoded. A missing key: `Error! No key exists at: KEY`, exit 1.
- `kv put KEY [VALUE]` (`-` reads stdin, `@file` reads a file; `-base64` decodes the value);
  `-flags`, `-cas -modify-index N`, `-acquire -session ID`, `-release -session ID`. Prints
  `Success! Data written to: KEY` (or `Lock acquired on` / `Lock released on`); a failed CAS or
  acquire is `Error! Did not write to KEY: ...`, exit 1.
- `kv delete KEY` (`-recurse`, `-cas -modify-index N`) prints `Success! Deleted key: KEY`
  (`Success! Deleted keys with prefix: PREFIX` for -recurse).
- `kv export [PREFIX]` prints a JSON array of `{"key", "flags", "value" (base64)}` (Consul's
  format); `kv import [-prefix P] [FILE|@FILE|-|JSON]` writes such an array (keys prefixed by P)
  through `/v1/txn` in chunks of at most `IMPORT_CHUNK_OPS` ops / `IMPORT_CHUNK_BYTES` of values,
  printing `Imported: KEY` per key; a bad file is an error before anything is written.
- `raw_request(client, method, path, params, body)` is the byte-level request the KV commands
  (and `waypost lock`) share: it returns (status, headers, body) and raises `AgentError` for
  transport problems and non-404 error statuses.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from agent.cli_common import CommandFailed, Ctx, add_http_flags, make_client, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_http import AgentClient, AgentError, AgentHTTPError, AgentUnreachable

IMPORT_CHUNK_OPS = 64  # Consul's txn limit
IMPORT_CHUNK_BYTES = 512 * 1024  # base64 value bytes per txn: stays under the 1 MiB body limit


def raw_request(client: AgentClient, method: str, path: str, params: list[tuple[str, str]] = (),  # type: ignore[assignment]
                body: bytes | None = None, timeout: float = 330.0) -> tuple[int, dict[str, str], bytes]:
    url = client.base_url + urllib.parse.quote(path, safe="/:")
    if params:
        url += "?" + urllib.parse.urlencode(params)
    req = urllib.request.Request(url, data=body, method=method)
    if client.token:
        req.add_header("X-Consul-Token", client.token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        data = err.read()
        if err.code == 404:
            return 404, dict(err.headers), data
        raise AgentHTTPError(err.code, data.decode(errors="replace").strip()) from None
    except urllib.error.URLError as err:
        raise AgentUnreachable(str(err.reason), client.base_url) from None
    except (TimeoutError, ConnectionError) as err:
        raise AgentUnreachable(str(err) or type(err).__name__, client.base_url) from None


def _flags(name: str, usage: str) -> FlagSet:
    fs = FlagSet(name, usage)
    add_http_flags(fs)
    fs.bool("base64", "Values are base64 encoded.")
    fs.bool("recurse", "Operate on every key under the given prefix.")
    return fs


def _key(args: list[str], *, allow_empty: bool = False) -> str:
    if not args and not allow_empty:
        raise CommandFailed("Error! Missing KEY argument")
    return args[0] if args else ""


def _decode_value(entry: dict) -> bytes:
    return base64.b64decode(entry["Value"]) if entry.get("Value") else b""


def _show(value: bytes, as_base64: bool) -> str:
    return base64.b64encode(value).decode() if as_base64 else value.decode(errors="replace")


def cmd_kv_get(argv: list[str], ctx: Ctx) -> int:
    fs = _flags("kv get", "Usage: waypost kv get [options] [KEY_OR_PREFIX]\n\n  Retrieves the value at the key.")
    fs.bool("detailed", "Show all fields of the entry.")
    fs.bool("keys", "List keys which start with the given prefix.")
    fs.string("separator", "With -keys, roll up keys at this separator.", default="/")
    values, args = parse_flags(fs, argv)
    client = make_client(values, ctx)
    as_b64 = bool(values["base64"])
    try:
        if values["keys"]:
            key = _key(args, allow_empty=True)
            status, _, body = raw_request(client, "GET", f"/v1/kv/{key}",
                                          [("keys", ""), ("separator", str(values["separator"]))])
            for name in (json.loads(body) if status == 200 else []):
                ctx.out(name)
            return 0
        if values["recurse"]:
            key = _key(args, allow_empty=True)
            status, _, body = raw_request(client, "GET", f"/v1/kv/{key}", [("recurse", "")])
            for entry in (json.loads(body) if status == 200 else []):
                if values["detailed"]:
                    ctx.out(_detailed(entry, as_b64) + "\n")
                else:
                    ctx.out(f"{entry['Key']}:{_show(_decode_value(entry), as_b64)}")
            return 0
        key = _key(args)
        status, _, body = raw_request(client, "GET", f"/v1/kv/{key}")
    except AgentError as err:
        raise CommandFailed(f"Error querying KV: {err}") from None
    if status == 404:
        raise CommandFailed(f"Error! No key exists at: {key}")
    [entry] = json.loads(body)
    if values["detailed"]:
        ctx.out(_detailed(entry, as_b64))
    else:
        ctx.stdout.write(_show(_decode_value(entry), as_b64) + "\n")
    return 0


def _detailed(entry: dict, as_b64: bool) -> str:
    rows = [("CreateIndex", entry["CreateIndex"]), ("Flags", entry["Flags"]), ("Key", entry["Key"]),
            ("LockIndex", entry["LockIndex"]), ("ModifyIndex", entry["ModifyIndex"]),
            ("Session", entry.get("Session") or "-"), ("Value", _show(_decode_value(entry), as_b64))]
    return "\n".join(f"{name:<17}{value}" for name, value in rows)


def _read_value(raw: str, as_b64: bool) -> bytes:
    if raw == "-":
        data = sys.stdin.buffer.read()
    elif raw.startswith("@"):
        try:
            data = Path(raw[1:]).read_bytes()
        except OSError as err:
            raise CommandFailed(f"Error! Failed to read file {raw[1:]}: {err.strerror}") from None
    else:
        data = raw.encode()
    if as_b64:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise CommandFailed("Error! Cannot base 64 decode value") from None
    return data


def cmd_kv_put(argv: list[str], ctx: Ctx) -> int:
    fs = _flags("kv put", "Usage: waypost kv put [options] KEY [DATA]\n\n  Writes the data to the given key.")
    fs.int("flags", "Unsigned integer flags to store with the key.")
    fs.bool("cas", "Check-and-set: only write if -modify-index matches the key's ModifyIndex.")
    fs.int("modify-index", "The ModifyIndex used by -cas.")
    fs.bool("acquire", "Obtain a lock on the key (needs -session).")
    fs.bool("release", "Release the lock on the key held by -session.")
    fs.string("session", "Session ID for -acquire/-release.")
    values, args = parse_flags(fs, argv)
    key = _key(args)
    if len(args) > 2:
        raise CommandFailed(f"Too many arguments (expected 1 or 2, got {len(args)})")
    value = _read_value(args[1], bool(values["base64"])) if len(args) == 2 else b""
    params: list[tuple[str, str]] = []
    if values["flags"]:
        params.append(("flags", str(values["flags"])))
    verb = "write"
    if values["cas"]:
        params.append(("cas", str(values["modify-index"])))
    if values["acquire"] or values["release"]:
        if not values["session"]:
            raise CommandFailed("Error! Missing -session (required with -acquire and -release)")
        verb = "acquire" if values["acquire"] else "release"
        params.append((verb, str(values["session"])))
    try:
        _, _, body = raw_request(make_client(values, ctx), "PUT", f"/v1/kv/{key}", params, value)
    except AgentError as err:
        raise CommandFailed(f"Error! Failed writing data: {err}") from None
    if json.loads(body) is not True:
        raise CommandFailed(f"Error! Did not write to {key}: "
                            f"{'CAS failed' if values['cas'] else 'lock is held or delayed'}")
    ctx.out({"write": "Success! Data written to: ", "acquire": "Success! Lock acquired on: ",
             "release": "Success! Lock released on: "}[verb] + key)
    return 0


def cmd_kv_delete(argv: list[str], ctx: Ctx) -> int:
    fs = _flags("kv delete", "Usage: waypost kv delete [options] KEY_OR_PREFIX\n\n  Removes the key.")
    fs.bool("cas", "Check-and-set: only delete if -modify-index matches.")
    fs.int("modify-index", "The ModifyIndex used by -cas.")
    values, args = parse_flags(fs, argv)
    key = _key(args, allow_empty=bool(values["recurse"]))
    if values["recurse"] and values["cas"]:
        raise CommandFailed("Cannot specify both -cas and -recurse!")
    params = [("recurse", "")] if values["recurse"] else []
    if values["cas"]:
        params.append(("cas", str(values["modify-index"])))
    try:
        _, _, body = raw_request(make_client(values, ctx), "DELETE", f"/v1/kv/{key}", params)
    except AgentError as err:
        raise CommandFailed(f"Error! Failed deleting data: {err}") from None
    if json.loads(body) is not True:
        raise CommandFailed(f"Error! Did not delete key {key}: CAS failed")
    ctx.out(f"Success! Deleted keys with prefix: {key}" if values["recurse"] else f"Success! Deleted key: {key}")
    return 0


def cmd_kv_export(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("kv export", "Usage: waypost kv export [options] [PREFIX]\n\n"
                 "  Exports the keys under PREFIX (all keys by default) as a JSON array.")
    add_http_flags(fs)
    values, args = parse_flags(fs, argv)
    prefix = _key(args, allow_empty=True)
    try:
        status, _, body = raw_request(make_client(values, ctx), "GET", f"/v1/kv/{prefix}", [("recurse", "")])
    except AgentError as err:
        raise CommandFailed(f"Error querying KV: {err}") from None
    entries = json.loads(body) if status == 200 else []
    out = [{"key": e["Key"], "flags": e.get("Flags", 0), "value": e.get("Value") or ""} for e in entries]
    ctx.out(json.dumps(out, indent=2))
    return 0


def _import_source(arg: str) -> bytes:
    if arg == "-":
        return sys.stdin.buffer.read()
    path = arg[1:] if arg.startswith("@") else arg
    if arg.startswith("@") or Path(path).is_file():
        try:
            return Path(path).read_bytes()
        except OSError as err:
            raise CommandFailed(f"Error! Failed to read file {path}: {err.strerror}") from None
    return arg.encode()  # literal JSON data, as Consul accepts


def parse_export(data: bytes, prefix: str = "") -> list[tuple[str, int, str]]:
    """`(key, flags, base64 value)` rows of an export document; raises `CommandFailed` if bad."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise CommandFailed(f"Error! Cannot unmarshal data: {err}") from None
    if not isinstance(doc, list):
        raise CommandFailed("Error! Cannot unmarshal data: expected a JSON array of entries")
    rows: list[tuple[str, int, str]] = []
    for item in doc:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise CommandFailed(f"Error! Invalid entry (needs a string \"key\"): {item!r}")
        flags, value = item.get("flags", 0), item.get("value") or ""
        if not isinstance(flags, int) or isinstance(flags, bool) or flags < 0 or not isinstance(value, str):
            raise CommandFailed(f"Error! Invalid flags or value for key {item['key']!r}")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise CommandFailed(f"Error! Cannot base 64 decode value of key {item['key']!r}") from None
        rows.append((prefix + item["key"], flags, value))
    return rows


def import_chunks(rows: list[tuple[str, int, str]]) -> list[list[tuple[str, int, str]]]:
    """Rows grouped into txns of ≤ `IMPORT_CHUNK_OPS` ops and ≈ `IMPORT_CHUNK_BYTES` of values."""
    chunks: list[list[tuple[str, int, str]]] = []
    size = 0
    for row in rows:
        if not chunks or len(chunks[-1]) >= IMPORT_CHUNK_OPS or (size + len(row[2]) > IMPORT_CHUNK_BYTES
                                                                 and chunks[-1]):
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += len(row[2])
    return chunks


def cmd_kv_import(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("kv import", "Usage: waypost kv import [options] [FILE|@FILE|-|DATA]\n\n"
                 "  Imports a JSON array made by `waypost kv export` (stdin when no argument).")
    add_http_flags(fs)
    fs.string("prefix", "Key prefix prepended to every imported key.")
    values, args = parse_flags(fs, argv)
    if len(args) > 1:
        raise CommandFailed(f"Too many arguments (expected 1, got {len(args)})")
    rows = parse_export(_import_source(args[0] if args else "-"), str(values["prefix"] or ""))
    client = make_client(values, ctx)
    for chunk in import_chunks(rows):
        ops = [{"KV": {"Verb": "set", "Key": key, "Flags": flags, "Value": value}} for key, flags, value in chunk]
        try:
            raw_request(client, "PUT", "/v1/txn", body=json.dumps(ops).encode())
        except AgentError as err:
            raise CommandFailed(f"Error! Failed to write {chunk[0][0]}: {err}") from None
        for key, _, _ in chunk:
            ctx.out(f"Imported: {key}")
    return 0


KV = {
    "get": ("Retrieve or list data", cmd_kv_get),
    "put": ("Sets or updates data", cmd_kv_put),
    "delete": ("Removes data", cmd_kv_delete),
    "export": ("Exports a tree from the KV store as JSON", cmd_kv_export),
    "import": ("Imports a tree stored as JSON to the KV store", cmd_kv_import),
}
