"""Ports 80 and 443 for an unprivileged daemon (`sudo gotunnel ports enable`); see docs/ports.md.

Root binds the two ports once; a small broker running as the user holds the sockets and hands
them over a unix socket (SCM_RIGHTS) only to processes of that same user (SO_PEERCRED). The
daemon asks for them when its ports are privileged, and every engine that can serve on sockets it
is given (builtin, nginx, Caddy) does.
"""
