"""The developer's loop behind `gotunnel run`: the project's name, the framework's port flags, the
child process (signals, exit code) and finding the port it listens on. Kept free of heavy imports."""
