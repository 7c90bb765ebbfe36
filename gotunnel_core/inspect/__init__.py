"""The request inspector: records the requests of tunnels started with `inspect = true`.

`records` holds what is recorded (a bounded ring buffer in the daemon), `observe` turns the bytes of
an HTTP/1.1 exchange into records without changing them, `native` is what an engine that records
them itself gets (`Engine.inspect_mode`), `relay` is the recording hop the daemon puts between any
other engine and an inspected tunnel's backends,
`replay` sends a recorded request again, and `har` exports records as HAR 1.2.
"""
