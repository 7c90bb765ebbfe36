"""The request inspector: records the requests of tunnels started with `inspect = true`.

`records` holds what is recorded (a bounded ring buffer in the daemon), `observe` turns the bytes of
an HTTP/1.1 exchange into records without changing them, `relay` is the recording hop the daemon
puts between the engine and an inspected tunnel's backends (so it works the same on every engine),
`replay` sends a recorded request again, and `har` exports records as HAR 1.2.
"""
