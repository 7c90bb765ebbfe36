"""gotunnel's nginx engine: Jinja2-rendered nginx configuration, supervised by the daemon."""
