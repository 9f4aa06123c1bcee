"""Every party of a policy in a network namespace of its own on this machine, under a lan or wan profile."""

from orchestrator.netns.deployment import NetnsDeployment, namespaced_policy, netns_deployment
from orchestrator.netns.network import PROFILES, NetnsError, Network, Profile, network

__all__ = ["PROFILES", "NetnsDeployment", "NetnsError", "Network", "Profile", "namespaced_policy", "netns_deployment",
           "network"]
