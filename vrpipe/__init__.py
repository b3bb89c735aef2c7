"""What every host-side part of vrpipe shares (image/, repo/, orchestration/ and tasks.py): one way to run a
program (run.py), one way to log and time steps (log.py), one error root (errors.py). The router's engine
(vr_scripts/vr/) keeps its own helpers: it runs on the router with the standard library only.
"""
