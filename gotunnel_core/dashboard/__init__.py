"""The local dashboard: a loopback-only HTTP server in the daemon with the tunnels page, the
request inspector's page and its JSON API (`api`), guarded by `guard` against LAN peers, other
local users, DNS rebinding and cross-site requests."""
