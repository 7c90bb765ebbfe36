"""Supervision of external proxy engines (nginx, Caddy, Envoy): shared by every such engine.

- `binary`: find the engine's program (engine option `bin`, then PATH) and its version.
- `runtime`: how the program runs. `ProcessRuntime` runs it as a child process in its own
  session; a container runtime can implement the same `Runtime` protocol later.
- `workdir`: the engine's private directory: versioned config generations and the atomic
  `current` symlink swap.
- `engine`: `SupervisedEngine`, the `Engine` base class that external engines subclass.
"""

from __future__ import annotations

from .binary import find_binary
from .engine import SupervisedEngine
from .runtime import EngineProcess, ProcessRuntime, Runtime
from .workdir import WorkDir

__all__ = ["EngineProcess", "ProcessRuntime", "Runtime", "SupervisedEngine", "WorkDir", "find_binary"]
