"""The per-user daemon that owns the engine and the route table, and the client the CLI uses."""
