"""``skiff lab``: a whole Skiff cluster on one machine (network namespaces + one dockerd per node)."""
