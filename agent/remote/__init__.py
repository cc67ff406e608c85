"""Client-mode access to the servers: a client agent has no Raft and no store, so catalog writes
and reads, every non-agent HTTP request and DNS lookups go to a server chosen from gossip members
(`servers.ServerPool`), over the servers' own HTTP API."""
