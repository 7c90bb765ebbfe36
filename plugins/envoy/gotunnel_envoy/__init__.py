"""gotunnel's Envoy engine: a rendered bootstrap plus file-based dynamic resources, supervised."""
