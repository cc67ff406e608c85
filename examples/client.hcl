# A client agent: no Raft, joins the servers and registers the local service files.
datacenter = "dc1"
data_dir   = "/var/lib/waypost"
server     = false
bind_addr  = "0.0.0.0"
client_addr = "127.0.0.1"
retry_join = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]   # the servers' gossip addresses (port 8301)
# encrypt = "..."   # the output of `waypost keygen`, the same on every agent (then rotate with `waypost keyring`)
enable_local_script_checks = false
node_meta {
  rack = "r1"
}
ports {
  http = 8500
  dns  = 8600
}
