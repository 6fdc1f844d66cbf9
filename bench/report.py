#!/usr/bin/env python3
"""Turns the raw measurements of bench/run.sh and bench/scale.sh into markdown tables.

    report.py run RESULTS.tsv RSS.tsv
    report.py scale RESULTS.tsv

Standard library only. Medians over rounds; a run that failed outright is left out of the median
and counted in the errors column.
"""

import os
import statistics
import sys
from collections import defaultdict

TARGETS = ["direct", "nginx", "haproxy", "portcullis"]
PROXIES = ["nginx", "haproxy", "portcullis"]

WORKLOADS = {
    "tiny": "HTTP/1.1 keep-alive, 2-byte body",
    "1k": "HTTP/1.1 keep-alive, 1 KiB body",
    "100k": "HTTP/1.1 keep-alive, 100 KiB body",
    "close": "new TCP connection per request (`Connection: close`)",
    "h2": "HTTP/2 cleartext (h2c prior knowledge), 16 conns × 16 streams",
    "h2-1": "as `h2`, 64 conns × 1 stream",
    "h2-100": "as `h2`, 4 conns × 100 streams",
    "tls-keepalive": "HTTPS keep-alive (HTTP/1.1 over TLS), 2-byte body",
    "h2-tls": "HTTP/2 over TLS (ALPN), 16 conns × 16 streams",
    "tls-full": "new TLS 1.3 connection per request, full handshake",
    "tls-resumed": "new TLS 1.3 connection per request, session resumed",
    "routes-1": "as `routes-10k`, the same request to the small configuration (a few routes)",
    "routes-10k": "as `tiny`, 10 000 host+path routes, last one requested",
}
UNIT = {"tls-full": "handshakes/s", "tls-resumed": "handshakes/s"}


def read_tsv(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 9:
                rows.append(parts)
    return rows


def kv(extra):
    out = {}
    for item in extra.split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k] = v
    return out


def fnum(x, digits=0):
    if x is None:
        return "—"
    if digits == 0:
        return f"{x:,.0f}".replace(",", " ")
    return f"{x:,.{digits}f}".replace(",", " ")


def median(values):
    return statistics.median(values) if values else None


class Run:
    def __init__(self, parts):
        (self.workers, self.round, self.workload, self.target, rate, count, errors, cpu, wall) = parts[:9]
        self.rate = float(rate)
        self.count = float(count)
        self.errors = int(errors)
        self.cpu = float(cpu)
        self.wall = float(wall)
        self.extra = kv(parts[9]) if len(parts) > 9 else {}

    @property
    def failed(self):
        return self.errors < 0


def run_report(results_path, rss_path):
    runs = [Run(p) for p in read_tsv(results_path)]
    by = defaultdict(list)
    for r in runs:
        by[(r.workers, r.workload, r.target)].append(r)
    workers = sorted({r.workers for r in runs}, key=int)
    rss = defaultdict(dict)
    for p in read_tsv_loose(rss_path):
        rss[p[0]][p[1]] = (int(p[2] or 0), int(p[3]) if len(p) > 3 and p[3] else None)

    lines = []
    for w in workers:
        pin = (
            "proxy pinned to CPU 1; backend and load generator share CPU 0"
            if w == "1"
            else "nothing pinned: proxy, backend and load generator share both CPUs"
        )
        lines.append(f"## {w} worker{'s' if w != '1' else ''} ({pin})")
        lines.append("")
        lines.append(throughput_table(by, w))
        lines.append("")
        lines.append(cpu_table(by, w))
        lines.append("")
        lat = latency_table(by, w)
        if lat:
            lines.append(lat)
            lines.append("")
        lines.append(memory_table(rss.get(w, {})))
        lines.append("")
        idle = idle_table(by, w)
        if idle:
            lines.append(idle)
            lines.append("")
        if w == "1":
            lines.append(noise_table(by, w))
            lines.append("")
    lines.append(legend())
    return "\n".join(lines)


def read_tsv_loose(path):
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 3:
                    rows.append(parts)
    except FileNotFoundError:
        pass
    return rows


def cell_rate(rs):
    if not rs:
        return "—"
    ok = [r for r in rs if not r.failed]
    errors = sum(r.errors for r in ok)
    failed = len(rs) - len(ok)
    if not ok:
        return "**failed**"
    text = fnum(median([r.rate for r in ok]))
    if rs[0].workload == "tls-resumed" or rs[0].workload == "tls-full":
        full = sum(float(r.extra.get("full", 0)) for r in ok)
        resumed = sum(float(r.extra.get("resumed", 0)) for r in ok)
        if full + resumed:
            text += f" ({100 * resumed / (full + resumed):.0f}% resumed)"
    notes = []
    if errors:
        notes.append(f"{errors} errors")
    if failed:
        notes.append(f"{failed} run(s) failed")
    if notes:
        text += " ⚠ " + ", ".join(notes)
    return text


def throughput_table(by, w):
    out = [
        f"Throughput (median of rounds; req/s unless noted). `P/nginx` is Portcullis relative to nginx.",
        "",
        "| workload | " + " | ".join(TARGETS) + " | P/nginx |",
        "|---|" + "---:|" * (len(TARGETS) + 1),
    ]
    for wl in WORKLOADS:
        if not any(by.get((w, wl, t)) for t in TARGETS):
            continue
        cells = [cell_rate(by.get((w, wl, t), [])) for t in TARGETS]
        ratio = "—"
        p = [r.rate for r in by.get((w, wl, "portcullis"), []) if not r.failed]
        n = [r.rate for r in by.get((w, wl, "nginx"), []) if not r.failed]
        if p and n and median(n) > 0:
            ratio = f"{median(p) / median(n):.2f}"
        label = wl + (f" ({UNIT[wl]})" if wl in UNIT else "")
        out.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(out)


def cpu_table(by, w):
    out = [
        "Proxy CPU per request in µs (user+system over all its processes and threads, median of rounds), "
        "and in brackets how busy the proxy was (CPU-seconds per wall second; 100% = one core) and the "
        "share of its CPU time spent in the kernel (system time: the TCP stack, syscalls):",
        "",
        "| workload | " + " | ".join(PROXIES) + " |",
        "|---|" + "---:|" * len(PROXIES),
    ]
    for wl in list(WORKLOADS) + ["latency"]:
        cells = []
        any_data = False
        for t in PROXIES:
            rs = [r for r in by.get((w, wl, t), []) if not r.failed and r.count > 0]
            if not rs:
                cells.append("—")
                continue
            any_data = True
            per_req = median([1e6 * r.cpu / r.count for r in rs])
            busy = median([100 * r.cpu / r.wall for r in rs if r.wall > 0])
            kernel = median([float(r.extra["kernel"]) for r in rs if "kernel" in r.extra])
            share = f", kernel {100 * kernel:.0f}%" if kernel is not None else ""
            cells.append(f"{per_req:.1f} ({busy:.0f}%{share})")
        if any_data:
            label = "latency (fixed rate)" if wl == "latency" else wl
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def latency_table(by, w):
    rows = {t: [r for r in by.get((w, "latency", t), []) if not r.failed] for t in TARGETS}
    if not any(rows.values()):
        return ""
    target_rate = next((float(r.extra.get("target_rps", 0)) for rs in rows.values() for r in rs), 0)
    nginx_max = [r.rate for r in by.get((w, "tiny", "nginx"), []) if not r.failed]
    if os.environ.get("LATENCY_RATE_NOTE"):
        why = os.environ["LATENCY_RATE_NOTE"]
    elif nginx_max and median(nginx_max) > 0:
        why = f"{100 * target_rate / median(nginx_max):.0f}% of nginx's `tiny` maximum above"
    else:
        why = "fixed"
    out = [
        f"Latency at a fixed {fnum(target_rate)} req/s ({why}), "
        f"HTTP/1.1 keep-alive, corrected for coordinated omission; medians of rounds, in µs. "
        f"`added` is over the backend reached directly.",
        "",
        "| target | achieved req/s | p50 | p99 | p99.9 | max | p50 added | p99 added | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def stat(rs, key):
        vals = [float(r.extra[key]) for r in rs if key in r.extra]
        return median(vals)

    d50, d99 = stat(rows["direct"], "p50_us"), stat(rows["direct"], "p99_us")
    for t in TARGETS:
        rs = rows[t]
        if not rs:
            out.append(f"| {t} | **failed** | | | | | | | |")
            continue
        p50, p99, p999, mx = (stat(rs, k) for k in ("p50_us", "p99_us", "p999_us", "max_us"))
        ach = median([float(r.extra.get("achieved_rps", 0)) for r in rs])
        errs = sum(r.errors for r in rs)
        add50 = fnum(p50 - d50) if t != "direct" and p50 is not None and d50 is not None else "—"
        add99 = fnum(p99 - d99) if t != "direct" and p99 is not None and d99 is not None else "—"
        out.append(
            f"| {t} | {fnum(ach)} | {fnum(p50)} | {fnum(p99)} | {fnum(p999)} | {fnum(mx)} | {add50} | {add99} | {errs} |"
        )
    return "\n".join(out)


def memory_table(rss):
    out = [
        "Memory in MiB: RSS when idle after start-up, and peak RSS (VmHWM) after all runs above; "
        "nginx figures add up master and workers (shared pages counted more than once).",
        "",
        "| proxy | idle RSS | peak RSS | idle RSS, 10 000 routes | peak RSS, 10 000 routes |",
        "|---|---:|---:|---:|---:|",
    ]

    def mib(kb):
        return "—" if kb is None else f"{kb / 1024:.1f}"

    for p in PROXIES:
        small = rss.get(p, (None, None))
        big = rss.get(p + "-10k", (None, None))
        out.append(f"| {p} | {mib(small[0])} | {mib(small[1])} | {mib(big[0])} | {mib(big[1])} |")
    return "\n".join(out)


IDLE_KINDS = {
    "h1": "HTTP/1.1 keep-alive",
    "h2c": "HTTP/2 cleartext",
    "tls": "TLS + HTTP/1.1 keep-alive",
}


def idle_table(by, w):
    if not any(by.get((w, f"idle-{k}", t)) for k in IDLE_KINDS for t in PROXIES):
        return ""
    conns = sorted(
        {int(r.extra.get("connections", 0)) for k in IDLE_KINDS for t in PROXIES for r in by.get((w, f"idle-{k}", t), [])}
    )
    out = [
        "Memory per idle connection (KiB, RSS growth ÷ connections): "
        f"{'/'.join(str(c) for c in conns)} connections of each kind, one request answered on each, then "
        "held open with no traffic while the next kind opens; the proxy's RSS (all its processes) is read "
        "before and after each kind.",
        "",
        "| connection | nginx | HAProxy | Portcullis | Portcullis ÷ nginx |",
        "|---|---:|---:|---:|---:|",
    ]

    def cell(rs):
        if not rs:
            return "—", None
        ok = [r for r in rs if not r.failed]
        if not ok:
            return "**failed**", None
        value = median([r.rate for r in ok])
        text = fnum(value, 1)
        opened = sum(int(r.count) for r in ok)
        asked = sum(int(r.extra.get("connections", 0)) for r in ok)
        errors = sum(r.errors for r in ok)
        if errors or opened < asked:
            text += f" ⚠ {opened} of {asked} opened, {errors} errors"
        return text, value

    for kind, label in IDLE_KINDS.items():
        cells = {t: cell(by.get((w, f"idle-{kind}", t), [])) for t in PROXIES}
        n, p = cells["nginx"][1], cells["portcullis"][1]
        ratio = f"{p / n:.2f}" if n is not None and p is not None and n > 0 else "—"
        out.append(
            f"| {kind} ({label}) | {cells['nginx'][0]} | {cells['haproxy'][0]} | {cells['portcullis'][0]} | {ratio} |"
        )
    return "\n".join(out)


def noise_table(by, w):
    out = [
        "CPU 1 (the proxy's own) during each measurement, medians in %: `other` = used by processes other "
        "than the proxy (high values mean the proxy was not alone and its numbers are low), `idle` = left "
        "unused (near 0 means CPU 1 was the limit, including the kernel's network work for the proxy, "
        "which is not in the proxy's own CPU time), `steal` = taken by the hypervisor.",
        "",
        "| workload | " + " | ".join(TARGETS) + " |",
        "|---|" + "---:|" * len(TARGETS),
    ]
    for wl in list(WORKLOADS) + ["latency"]:
        cells = []
        any_data = False
        for t in TARGETS:
            rs = [r for r in by.get((w, wl, t), []) if "other_cpu_pct" in r.extra]
            if not rs:
                cells.append("—")
                continue
            any_data = True
            other = median([float(r.extra["other_cpu_pct"]) for r in rs])
            idle = median([float(r.extra.get("idle_pct", 0)) for r in rs])
            steal = median([float(r.extra.get("steal_pct", 0)) for r in rs])
            cells.append(f"other {other:.0f}, idle {idle:.0f}, steal {steal:.0f}")
        if any_data:
            out.append(f"| {wl} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def legend():
    out = ["### Workloads", "", "| workload | what |", "|---|---|"]
    for k, v in WORKLOADS.items():
        out.append(f"| {k} | {v} |")
    return "\n".join(out)


def scale_report(results_path):
    rows = read_tsv_loose(results_path)
    out = ["| measurement | value |", "|---|---:|"]
    for p in rows:
        out.append(f"| {p[0]} | {p[1]} {p[2]} |")
    return "\n".join(out)


def main(argv):
    if len(argv) >= 3 and argv[1] == "run":
        print(run_report(argv[2], argv[3] if len(argv) > 3 else ""))
    elif len(argv) >= 3 and argv[1] == "scale":
        print(scale_report(argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
