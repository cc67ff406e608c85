# /etc/waypost.d/waypost.hcl: the agent's configuration (Consul's keys). Service definitions
# (*.yaml, *.json, *.hcl with service/services) can sit in the same directory.
data_dir = "/var/lib/waypost"

# Today a waypost server runs alone (multi-server Raft and client agents are not built yet).
server           = true
bootstrap_expect = 1

client_addr = "127.0.0.1"
#bind_addr  = "0.0.0.0"
#datacenter = "dc1"
#log_level  = "INFO"
#log_file   = "/var/log/waypost/"
#ports {
#  dns = 53   # also install the dns53 drop-in (install.sh --dns-port-53)
#}
