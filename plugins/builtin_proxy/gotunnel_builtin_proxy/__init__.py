"""gotunnel's builtin proxy engine (asyncio Protocols on uvloop, httptools parsers)."""
