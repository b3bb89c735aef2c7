"""In-place upgrades of live routers through apt: the apt commands and their parsing (apt), the checks
before and after (checks), one router's upgrade and the fleet's (inplace), the order and the failure
budget of a rollout (rollout), what the store keeps (records), and `vrpipe upgrade` (cli).
"""
