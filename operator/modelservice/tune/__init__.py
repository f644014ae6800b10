"""Tuning Triton against a latency target (issue 11): ``modelservice tune``.

- ``search``: the pure search (candidates, order, early stopping, bounds, the choice), fed measurements;
- ``profile``: measurements against a running Triton (model-control API, closed-loop load);
- ``run``: the command, locally (starts its own Triton) or in the profiling pod (uses the sidecar's).
"""
