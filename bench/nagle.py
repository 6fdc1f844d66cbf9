#!/usr/bin/env python3
"""Peers that leave Nagle's algorithm on and write each message in two pieces, for bench/nagle.sh.

  nagle.py backend --port P            keep-alive HTTP/1.1 server: the response head, then the body,
                                       in two writes on a socket with Nagle on
  nagle.py client --port P --host H --requests N [--post]
                                       sequential keep-alive requests on one connection with Nagle
                                       on; with --post the request head and its body go in two
                                       writes; prints p50/p90/p99 latency in ms

Loopback only. Every loop is bounded by --requests or by the server's lifetime.
"""
import argparse
import socket
import statistics
import threading
import time

BODY = b"hello from a backend that writes twice\n"


def read_head(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def serve(conn):
    buf = b""
    with conn:
        while True:
            head, buf = read_head(conn, buf)
            if head is None:
                return
            need = content_length(head)
            while len(buf) < need:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[need:]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(BODY))
            conn.sendall(BODY)


def backend(args):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(128)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def client(args):
    sock = socket.create_connection(("127.0.0.1", args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    sock.settimeout(10)
    body = b'{"index": "7"}'
    times = []
    buf = b""
    for _ in range(args.requests):
        t0 = time.perf_counter()
        if args.post:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % (args.host.encode(), len(body)))
            sock.sendall(body)
        else:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % args.host.encode())
        head, buf = read_head(sock, buf)
        if head is None:
            raise SystemExit("connection closed")
        need = content_length(head)
        while len(buf) < need:
            buf += sock.recv(65536)
        buf = buf[need:]
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
    print("requests=%d p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f mean_ms=%.2f"
          % (len(times), q(0.5), q(0.9), q(0.99), statistics.mean(times)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backend")
    b.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--host", default="bench.local")
    c.add_argument("--requests", type=int, default=200)
    c.add_argument("--post", action="store_true")
    args = p.parse_args()
    {"backend": backend, "client": client}[args.cmd](args)


if __name__ == "__main__":
    main()
