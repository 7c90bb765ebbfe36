"""A team-edge client run inside a test's client namespace: HTTPS to an edge's address with the
team name as SNI and Host, verified against the team CA.

    python team_client.py probe CA EDGE[,EDGE] NAME[,NAME]        -> JSON {"EDGE NAME": status|error}
    python team_client.py load CA EDGE[,EDGE] NAME[,NAME] STOPFILE OUT
        requests round-robin over every edge and name (fresh and reused connections) until
        STOPFILE exists; writes {"ok": n, "failed": n, "errors": [...]} to OUT.
    python team_client.py impostor CERT KEY PORT LOG
        a LAN peer posing as an agent: a TLS server with CERT that answers any request with
        200 "stolen"; appends one JSON line per connection to LOG (peer, handshake, request).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time


class TeamConnection(http.client.HTTPConnection):
    """HTTPS to `address` while naming `server_name` in SNI and the certificate check."""

    def __init__(self, address: str, server_name: str, context: ssl.SSLContext, timeout: float = 5.0) -> None:
        host, _, port = address.rpartition(":")
        super().__init__(host, int(port), timeout=timeout)
        self.server_name, self.context = server_name, context

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.context.wrap_socket(raw, server_hostname=self.server_name)


def get(conn: TeamConnection, name: str) -> tuple[int, bytes]:
    conn.request("GET", "/", headers={"Host": name})
    response = conn.getresponse()
    return response.status, response.read()


def probe(ca: str, edges: list[str], names: list[str]) -> dict[str, str]:
    context = ssl.create_default_context(cafile=ca)
    out: dict[str, str] = {}
    for edge in edges:
        for name in names:
            conn = TeamConnection(edge, name, context)
            try:
                status, body = get(conn, name)
                out[f"{edge} {name}"] = f"{status} {body[:200].decode(errors='replace')}"
            except Exception as exc:  # noqa: BLE001 - reported to the test
                out[f"{edge} {name}"] = f"error {type(exc).__name__}: {exc}"
            finally:
                conn.close()
    return out


def load(ca: str, edges: list[str], names: list[str], stop_file: str, out_file: str, threads: int = 4) -> None:
    context = ssl.create_default_context(cafile=ca)
    lock = threading.Lock()
    result: dict[str, object] = {"ok": 0, "failed": 0, "errors": []}
    targets = [(e, n) for e in edges for n in names]

    def worker(offset: int) -> None:
        conns: dict[tuple[str, str], TeamConnection] = {}
        i = offset
        while not os.path.exists(stop_file):
            edge, name = targets[i % len(targets)]
            i += 1
            fresh = i % 3 == 0  # a third of the requests on a new connection (new TLS handshake)
            conn = conns.get((edge, name))
            if conn is None or fresh:
                if conn is not None:
                    conn.close()
                conn = conns[(edge, name)] = TeamConnection(edge, name, context)
            try:
                status, _ = get(conn, name)
                ok = status == 200
                error = None if ok else f"{edge} {name}: status {status}"
            except Exception as exc:  # noqa: BLE001
                ok, error = False, f"{edge} {name}: {type(exc).__name__}: {exc}"
                conn.close()
                conns.pop((edge, name), None)
            with lock:
                if ok:
                    result["ok"] += 1  # type: ignore[operator]
                else:
                    result["failed"] += 1  # type: ignore[operator]
                    result["errors"].append(f"{time.time():.3f} {error}")  # type: ignore[union-attr]

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    with open(out_file, "w") as fh:
        json.dump(result, fh)


def impostor(cert: str, key: str, port: int, log: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("0.0.0.0", port), reuse_port=False)

    def serve(raw: socket.socket, peer: tuple[str, int]) -> None:
        entry: dict[str, object] = {"peer": peer[0], "handshake": False, "request": ""}
        try:
            raw.settimeout(5)
            with context.wrap_socket(raw, server_side=True) as tls:
                entry["handshake"] = True
                data = tls.recv(4096)
                entry["request"] = data[:200].decode(errors="replace")
                if data:
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nstolen")
        except Exception as exc:  # noqa: BLE001 - recorded for the test
            entry["error"] = f"{type(exc).__name__}: {exc}"[:200]
        with open(log, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    while True:
        raw, peer = server.accept()
        threading.Thread(target=serve, args=(raw, peer), daemon=True).start()


if __name__ == "__main__":
    if sys.argv[1] == "impostor":
        impostor(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        sys.exit(0)
    mode, ca, edges, names = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4].split(",")
    if mode == "probe":
        print(json.dumps(probe(ca, edges, names)))
    else:
        load(ca, edges, names, sys.argv[5], sys.argv[6])
