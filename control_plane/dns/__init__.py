"""Cluster DNS: Kubernetes' DNS-based service discovery, served by the control plane.

``records`` indexes Services and EndpointSlices by name; ``resolver`` answers one query
from that index (a pure function of the query and the index); ``server`` carries
queries over UDP and TCP; ``cluster_dns`` runs it all in ``skiff server`` from the
process's own informers.
"""
