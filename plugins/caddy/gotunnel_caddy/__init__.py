"""gotunnel's Caddy engine: Caddy's native JSON config, loaded through the admin unix socket."""
