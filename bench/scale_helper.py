#!/usr/bin/env python3
"""Measurements for bench/scale.sh that need finer timing than a shell loop.

    scale_helper.py change --file F --new-content G --port P --host H --path /p --expect BODY
                           --other-host H2 --other-path /q [--timeout S]
        Replaces F with G the way editors do (write a temporary file, rename it over F), then polls
        the proxy until H/p answers BODY; meanwhile it also requests H2/q (an unchanged route) and
        counts its failures. Prints key=value pairs; seconds are measured from the rename.

    scale_helper.py idle-conns --port P --host H --path /p --count N --pid PID [--batch B] [--hold S]
        Opens N keep-alive connections to 127.0.0.1:P, sends one request on each and reads the whole
        response, keeps them all open, and reports the proxy's VmRSS before and after.

    scale_helper.py churn --dir D --indices I,J,... --port P --port-a A --port-b B --rate R
                          --duration S [--load-threads T] [--load-rate L] [--timeout S]
        Endpoint churn: R times a second for S seconds, rewrites the manifest of the next Ingress
        of I,J,... (D/ing-<i>.yaml: Ingress, Service and EndpointSlice) so that its EndpointSlice
        points at the other of ports A ("ok") and B ("new"), as editors do (write a temporary file,
        rename it over), and polls h<i>.bench.local/p<i> over a keep-alive connection until the new
        port answers: the change-to-served time, from the rename. Meanwhile T threads send about L
        requests a second in all to the churned routes and count every answer that is not a 200
        from one of the two backends. Prints key=value pairs.

Standard library only; every loop is bounded in count and time; loopback only.
"""

import argparse
import http.client
import os
import selectors
import socket
import sys
import threading
import time


def get(port, host, path, timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def change(args):
    with open(args.new_content, "rb") as f:
        content = f.read()
    tmp = os.path.join(os.path.dirname(args.file), "." + os.path.basename(args.file) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    expect = args.expect.encode()
    t0 = time.monotonic()
    os.replace(tmp, args.file)
    deadline = t0 + args.timeout
    polls = other_ok = other_failed = 0
    seen = None
    while time.monotonic() < deadline:
        polls += 1
        try:
            status, body = get(args.port, args.host, args.path)
            if status == 200 and body.strip() == expect:
                seen = time.monotonic() - t0
                break
        except OSError:
            pass
        try:
            status, _ = get(args.port, args.other_host, args.other_path)
            if status == 200:
                other_ok += 1
            else:
                other_failed += 1
        except OSError:
            other_failed += 1
        time.sleep(0.005)
    print(
        f"served_after_s={'%.3f' % seen if seen is not None else 'timeout'} polls={polls} "
        f"unchanged_route_ok={other_ok} unchanged_route_failed={other_failed}"
    )
    return 0 if seen is not None else 1


def vm_kb(pid, field):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def open_batch(port, request, n, timeout):
    """Opens n connections, sends the request on each and reads each response to its end."""
    sel = selectors.DefaultSelector()
    pending = {}
    opened = []
    failed = 0
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, 115):  # 115: EINPROGRESS
            s.close()
            failed += 1
            continue
        pending[s] = {"sent": False, "buf": b""}
        sel.register(s, selectors.EVENT_WRITE)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, events in sel.select(timeout=0.5):
            s = key.fileobj
            st = pending[s]
            try:
                if not st["sent"]:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                        raise OSError("connect failed")
                    s.send(request)
                    st["sent"] = True
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                chunk = s.recv(65536)
                if not chunk:
                    raise OSError("closed before the response ended")
                st["buf"] += chunk
                if response_complete(st["buf"]):
                    if not st["buf"].startswith(b"HTTP/1.1 200"):
                        raise OSError("status " + st["buf"][:12].decode(errors="replace"))
                    sel.unregister(s)
                    del pending[s]
                    opened.append(s)
            except OSError:
                sel.unregister(s)
                del pending[s]
                s.close()
                failed += 1
    for s in list(pending):
        sel.unregister(s)
        s.close()
        failed += 1
    sel.close()
    return opened, failed


def response_complete(buf):
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    # Chunked or close-delimited responses are not expected from the benchmark backend.
    return body.endswith(b"0\r\n\r\n")


def idle_conns(args):
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\nUser-Agent: scale-helper\r\n\r\n"
    ).encode()
    # Let the proxy settle (and its allocator return what start-up used) before the baseline.
    time.sleep(1.0)
    before = vm_kb(args.pid, "VmRSS")
    conns = []
    failed = 0
    t0 = time.monotonic()
    while len(conns) + failed < args.count and time.monotonic() - t0 < args.timeout:
        n = min(args.batch, args.count - len(conns) - failed)
        opened, bad = open_batch(args.port, request, n, timeout=30)
        conns.extend(opened)
        failed += bad
    open_s = time.monotonic() - t0
    time.sleep(args.hold)
    after = vm_kb(args.pid, "VmRSS")
    hwm = vm_kb(args.pid, "VmHWM")
    # Still open? A connection the proxy closed reads as EOF without blocking.
    alive = 0
    for s in conns:
        s.setblocking(False)
        try:
            alive += 0 if s.recv(1) == b"" else 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    for s in conns:
        s.close()
    per_conn = (after - before) / len(conns) if conns else 0.0
    print(
        f"connections={len(conns)} failed={failed} still_open={alive} open_s={open_s:.2f} "
        f"rss_before_kb={before} rss_after_kb={after} vmhwm_kb={hwm} kb_per_connection={per_conn:.2f}"
    )
    return 0 if conns else 1


class Client:
    """One keep-alive connection to the proxy, opened again after an error."""

    def __init__(self, port, timeout=2.0):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def get(self, host, path):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request("GET", path, headers={"Host": host})
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise


def slice_port_swapped(text, old, new):
    """The manifest with its EndpointSlice's port `old` replaced by `new` (the Service's
    targetPort stays: the proxy connects to the slice's port)."""
    before = f"ports:\n  - port: {old}\nendpoints:"
    if before not in text:
        raise ValueError(f"no EndpointSlice port {old} in the manifest")
    return text.replace(before, f"ports:\n  - port: {new}\nendpoints:")


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def churn_load(args, indices, stop, counts, lock):
    """Requests to the churned routes at about args.load_rate / args.load_threads a second."""
    client = Client(args.port)
    period = args.load_threads / args.load_rate if args.load_rate > 0 else 0.0
    n = 0
    next_at = time.monotonic()
    ok = failed = 0
    while not stop.is_set():
        i = indices[(n * 7919) % len(indices)]
        n += 1
        try:
            status, body = client.get(f"h{i}.bench.local", f"/p{i}")
            if status == 200 and body.strip() in (b"ok", b"new"):
                ok += 1
            else:
                failed += 1
        except (OSError, http.client.HTTPException):
            failed += 1
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()
    with lock:
        counts["ok"] += ok
        counts["failed"] += failed


def churn_watch(args, jobs, results, lock):
    """Polls each change handed over in `jobs` until its route answers from the new port."""
    client = Client(args.port)
    while True:
        job = jobs.get()
        if job is None:
            return
        i, expect, t0 = job
        deadline = t0 + args.timeout
        seen = None
        while time.monotonic() < deadline:
            try:
                status, body = client.get(f"h{i}.bench.local", f"/p{i}")
                if status == 200 and body.strip() == expect:
                    seen = time.monotonic() - t0
                    break
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.0002)
        with lock:
            results.append(seen)


def churn(args):
    import queue

    indices = [int(x) for x in args.indices.split(",") if x]
    files = {i: os.path.join(args.dir, f"ing-{i:05d}.yaml") for i in indices}
    texts = {}
    for i, path in files.items():
        with open(path, encoding="utf-8") as f:
            a = f.read()
        texts[i] = (a, slice_port_swapped(a, args.port_a, args.port_b))
    on_b = {i: False for i in indices}
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0}
    results = []
    jobs = queue.Queue()
    loaders = [
        threading.Thread(target=churn_load, args=(args, indices, stop, counts, lock), daemon=True)
        for _ in range(args.load_threads if args.load_rate > 0 else 0)
    ]
    watchers = [
        threading.Thread(target=churn_watch, args=(args, jobs, results, lock), daemon=True)
        for _ in range(args.watchers)
    ]
    for t in loaders + watchers:
        t.start()
    # Let the load reach its pace before the first change.
    time.sleep(0.5)
    total = int(args.rate * args.duration)
    start = time.monotonic()
    late = 0.0
    for k in range(total):
        due = start + k / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            late = max(late, -delay)
        i = indices[k % len(indices)]
        on_b[i] = not on_b[i]
        text = texts[i][1] if on_b[i] else texts[i][0]
        tmp = os.path.join(args.dir, f".ing-{i:05d}.yaml.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        t0 = time.monotonic()
        os.replace(tmp, files[i])
        jobs.put((i, b"new" if on_b[i] else b"ok", t0))
    elapsed = time.monotonic() - start
    for _ in watchers:
        jobs.put(None)
    for t in watchers:
        t.join(args.timeout + 5)
    stop.set()
    for t in loaders:
        t.join(5)
    # Put every manifest back as it was.
    for i in indices:
        if on_b[i]:
            tmp = os.path.join(args.dir, f".ing-{i:05d}.yaml.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(texts[i][0])
            os.replace(tmp, files[i])
    served = sorted(r * 1000 for r in results if r is not None)
    missed = sum(1 for r in results if r is None)
    print(
        f"changes={total} changes_per_s={total / elapsed:.1f} served={len(served)} "
        f"not_served={missed} p50_ms={percentile(served, 50):.2f} "
        f"p90_ms={percentile(served, 90):.2f} p99_ms={percentile(served, 99):.2f} "
        f"max_ms={(served[-1] if served else float('nan')):.2f} "
        f"requests={counts['ok'] + counts['failed']} failed={counts['failed']} "
        f"writer_late_ms={late * 1000:.1f}"
    )
    return 0 if missed == 0 and counts["failed"] == 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("change")
    c.add_argument("--file", required=True)
    c.add_argument("--new-content", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--host", required=True)
    c.add_argument("--path", required=True)
    c.add_argument("--expect", required=True)
    c.add_argument("--other-host", required=True)
    c.add_argument("--other-path", required=True)
    c.add_argument("--timeout", type=float, default=300.0)
    i = sub.add_parser("idle-conns")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--host", required=True)
    i.add_argument("--path", required=True)
    i.add_argument("--count", type=int, default=10000)
    i.add_argument("--batch", type=int, default=250)
    i.add_argument("--pid", type=int, required=True)
    i.add_argument("--hold", type=float, default=2.0)
    i.add_argument("--timeout", type=float, default=300.0)
    w = sub.add_parser("churn")
    w.add_argument("--dir", required=True)
    w.add_argument("--indices", required=True)
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--port-a", type=int, required=True)
    w.add_argument("--port-b", type=int, required=True)
    w.add_argument("--rate", type=float, default=100.0)
    w.add_argument("--duration", type=float, default=10.0)
    w.add_argument("--load-threads", type=int, default=4)
    w.add_argument("--load-rate", type=float, default=800.0)
    w.add_argument("--watchers", type=int, default=8)
    w.add_argument("--timeout", type=float, default=2.0)
    args = p.parse_args()
    if args.cmd == "change":
        return change(args)
    if args.cmd == "churn":
        return churn(args)
    return idle_conns(args)


if __name__ == "__main__":
    sys.exit(main())
