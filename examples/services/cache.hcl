# A cache, in Consul's HCL: one service block with a TCP check.
service {
  name = "cache"
  id   = "cache-1"
  port = 6379
  address = "127.0.0.1"
  tags = ["redis"]
  meta = {
    maxmemory = "256mb"
  }
  check {
    id       = "cache-tcp"
    name     = "Redis TCP"
    tcp      = "127.0.0.1:6379"
    interval = "10s"
    timeout  = "1s"
  }
}
