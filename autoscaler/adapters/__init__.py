"""Adapters: the autoscaler's I/O (Prometheus in, Kubernetes out); see docs/adapters.md."""
