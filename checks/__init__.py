"""Health checks with Consul's semantics. Never imports `agent/`.

Entry points: `checks.checkset.CheckSet` (the supervisor the agent owns), `checks.result.CheckResult`,
`checks.errors` (error classes), `checks.definition` (shared data), `checks.probes.AliasSource`.
"""
