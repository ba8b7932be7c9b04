"""Run what `helm template` renders as a cluster would run it, with podman (see runner.py)."""
