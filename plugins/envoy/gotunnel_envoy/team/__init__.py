"""The team edge on Envoy: the hub (delta ADS + the agent API on one mTLS port) and the edge
runner (an Envoy bootstrapped to the hubs). Needs the `team` extra: `gotunnel-envoy[team]`."""
