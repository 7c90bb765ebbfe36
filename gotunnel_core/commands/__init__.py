"""The core's CLI commands, one module per topic. Each module is an internal plugin: it implements
`gotunnel_register_commands` exactly as a third-party plugin would, and holds only the command-line
surface (options, output); the work is done by the core modules it calls."""
