"""The scheduler: assigns pending pods to nodes (kube-scheduler's default profile)."""
