"""The lab: routers, VMs and a public network on this one machine (network namespaces, system containers),
and the demo and benchmarks built on it. It serves tests, benchmarks and demos; no product module imports it.
"""
