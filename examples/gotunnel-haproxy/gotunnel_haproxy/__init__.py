"""gotunnel-haproxy: HAProxy as a gotunnel engine, a third-party package built on gotunnel-core's public API."""
