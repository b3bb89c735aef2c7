"""The router's config engine: one JSON document in, nftables, dnsmasq, haproxy and metadata state out.

Runs inside the router on python3 with Debian packages only (stdlib + python3-jinja2).
"""

__version__ = "1.0.0"
SCHEMA_VERSION = 1
