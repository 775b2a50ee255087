"""The in-cluster controller: the pure core run against real Prometheus and Kubernetes.

Modules:

- :mod:`autoscaler.controller.leader`: ``coordination.k8s.io/v1`` Lease leader election
  (only the leader writes).
- :mod:`autoscaler.controller.metrics`: the controller's own Prometheus metrics.
- :mod:`autoscaler.controller.server`: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.

Importing this package imports nothing heavy; import the modules you need.
"""
