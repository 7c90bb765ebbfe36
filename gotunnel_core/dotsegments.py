"""Dot segments (`.` and `..`, also percent-encoded as `%2e` in any case) in a request path.

A tunnel whose backend has a path prefix (`http://127.0.0.1:3000/app`) joins the request path
to it: `/../admin` would become `/app/../admin` and leave the prefix at the backend. Browsers
and HTTP libraries remove dot segments before sending, so only crafted requests carry them;
every engine refuses such a request with 400 (a tunnel with no prefix too, so all tunnels
behave alike). The query string is not part of the path and is never looked at.
"""

from __future__ import annotations

import re

#: Matches a request target (path and query, as sent) whose path has a dot segment. Written in
#: the syntax PCRE (nginx) and RE2 (Caddy, Envoy) share.
TARGET_REGEX = r"(?i)^[^?]*/(?:\.|%2e){1,2}(?:[/?].*)?$"
#: The same for a path without its query (Envoy's route matcher sees only the path).
PATH_REGEX = r"(?i)^.*/(?:\.|%2e){1,2}(?:/.*)?$"

_TARGET = re.compile(TARGET_REGEX.encode("ascii"))


def has_dot_segment(target: bytes) -> bool:
    """Whether the path of a request target (`/a/../b?q`) has a `.` or `..` segment, plain or encoded."""
    # `find`, not `in`: CPython's bytes `in` first tries the needle as an int and builds (then
    # drops) a TypeError, about 1,800 instructions each time; this runs on every request.
    if target.find(b"/.") < 0 and target.find(b"%2") < 0:
        return False  # the common case, decided without a regex
    return _TARGET.match(target) is not None
