"""Writes BENCHMARKS.md (to stdout) from a bench/run.sh output directory.

Usage: python report.py OUT_DIR
       python report.py --e2ee-only OUT_DIR   (the end-to-end encryption tables alone)
       python report.py --media-only OUT_DIR  (the media section alone)
       python report.py --splice-media MEDIA_MD BENCHMARKS_MD  (replaces the media section)
       python report.py --federation-only OUT_DIR  (the federation section alone)
       python report.py --splice-federation FEDERATION_MD BENCHMARKS_MD  (replaces it)
       python report.py --sliding-sync-only OUT_DIR  (the sliding sync section alone)
       python report.py --splice-sliding-sync SLIDING_SYNC_MD BENCHMARKS_MD  (replaces it)
       python report.py --appservice-only OUT_DIR  (the appservices section alone)
       python report.py --splice-appservice APPSERVICE_MD BENCHMARKS_MD  (replaces it)
       python report.py --admin-only OUT_DIR  (the admin API section alone)
       python report.py --splice-admin ADMIN_MD BENCHMARKS_MD  (replaces it)
"""
import glob
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("MYELIN_SHARED_DIR", os.path.join(HERE, "..", "..", "shared"))

# (label, headline key, loadgen path, better: "higher"|"lower", target ratio)
TARGETS = [
    ("message send, one room, 10 senders (events/s)", "send_one_room_events_per_s", ("send_one_room", "events_per_s"), "higher", 50),
    ("message send, 100 rooms (events/s)", "send_many_rooms_events_per_s", ("send_many_rooms", "events_per_s"), "higher", 50),
    ("delivery send -> other user's /sync, p99 (ms)", "delivery_p99_ms", ("delivery", "latency_ms", "p99"), "lower", 20),
    ("initial /sync, 20 rooms x 50 msgs, median (ms)", "initial_sync_median_ms", None, "lower", 10),
    ("199 users joining one room (joins/s)", "joins_per_s", ("joins", "per_s"), "higher", 20),
    ("server RSS after the run (MiB)", "server_rss_mib_after", None, "lower", 5),
]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def dig(d, path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# (label, path in myelin-e2ee's report, better, target ratio)
E2EE_ROWS = [
    ("/keys/claim, 10 concurrent claimers (claims/s)", ("claim", "per_s"), "higher", 20),
    ("/keys/claim p99 (ms)", ("claim", "latency_ms", "p99"), "lower", 10),
    ("/keys/query, 1,000 users sharing a room (queries/s)", ("query", "per_s"), "higher", 20),
    ("/keys/query p99 (ms)", ("query", "latency_ms", "p99"), "lower", 10),
    ("to-device, 1,000 messages to 100 devices via /sync (messages/s)", ("to_device", "per_s"), "higher", 20),
    ("sendToDevice p99 (ms)", ("to_device", "send_latency_ms", "p99"), "lower", 10),
]


def e2ee_section(out, dbs):
    """The end-to-end encryption rows (bench/loadgen's myelin-e2ee against both servers)."""
    for db in dbs:
        syn = load(os.path.join(out, f"e2ee-synapse-{db}.json"))
        my = load(os.path.join(out, f"e2ee-myelin-{db}.json"))
        if not syn and not my:
            continue
        syn, my = syn or {}, my or {}
        print(f"## End-to-end encryption, {db} (*lg*: bench/loadgen myelin-e2ee against both)\n")
        print("| measure | Synapse | Myelin | ratio | target | met |")
        print("|---|---|---|---|---|---|")
        for label, path, better, target in E2EE_ROWS:
            s, m = dig(syn, path), dig(my, path)
            ratio = None
            if isinstance(s, (int, float)) and isinstance(m, (int, float)) and s > 0 and m > 0:
                ratio = m / s if better == "higher" else s / m
            met = "yes" if ratio is not None and ratio >= target else ("no" if ratio is not None else "?")
            rtxt = f"{ratio:.1f}x" if ratio is not None else "-"
            ttxt = f">= {target}x" if better == "higher" else f"<= 1/{target}"
            print(f"| {label} | {fmt(s)} | {fmt(m)} | {rtxt} | {ttxt} | {met} |")
        dup = [f"{name} {dig(d, ('claim', 'duplicates'))}" for name, d in (("Synapse", syn), ("Myelin", my)) if d]
        print(f"\nOne-time keys handed out twice: {', '.join(dup)} (must be 0).\n")


MEDIA_BEGIN = "<!-- media:begin -->"
MEDIA_END = "<!-- media:end -->"


def media_section(out, dbs):
    """The media rows (bench/media.py against both servers), between markers so that a
    `--media-only` run can replace them in BENCHMARKS.md."""
    print(MEDIA_BEGIN)
    for db in dbs:
        syn = load(os.path.join(out, f"media-synapse-{db}.json"))
        my = load(os.path.join(out, f"media-myelin-{db}.json"))
        if not syn and not my:
            continue
        syn, my = syn or {}, my or {}
        quick = " (quick smoke run: not a figure)" if my.get("quick") or syn.get("quick") else ""
        print(f"## Media, {db}{quick} (bench/media.py against both, `dynamic_thumbnails` on both, run on "
              f"{time.strftime('%Y-%m-%d')})\n")
        print("| measure | Synapse | Myelin | reference | ratio | target | met |")
        print("|---|---|---|---|---|---|---|")

        def row(label, s, m, reference, ratio, target, met):
            rtxt = f"{ratio:.1f}x" if ratio is not None else "-"
            mtxt = "?" if met is None else ("yes" if met else "no")
            print(f"| {label} | {fmt(s)} | {fmt(m)} | {reference} | {rtxt} | {target} | {mtxt} |")

        by_size = lambda d: {t.get("size_mb"): t for t in d.get("throughput") or []}
        syn_t, my_t = by_size(syn), by_size(my)
        for size in sorted(set(syn_t) | set(my_t)):
            st, mt = syn_t.get(size, {}), my_t.get(size, {})
            for kind in ("upload", "download"):
                s, m = st.get(f"{kind}_mb_per_s"), mt.get(f"{kind}_mb_per_s")
                copy = mt.get("copy_mb_per_s")
                ratio = copy / m if isinstance(copy, (int, float)) and isinstance(m, (int, float)) and m > 0 else None
                row(f"{kind} {size} MB (MB/s)", s, m, f"copy {fmt(copy)}", ratio,
                    "within 2x of copy", None if ratio is None else ratio <= 2)
        st, mt = syn.get("thumbnail") or {}, my.get("thumbnail") or {}
        s, m = st.get("ms_median"), mt.get("ms_median")
        ratio = s / m if isinstance(s, (int, float)) and isinstance(m, (int, float)) and m > 0 else None
        row("thumbnail of a 12-megapixel JPEG, on demand, median (ms)", s, m, "-", ratio, ">= 5x",
            None if ratio is None else ratio >= 5)
        st, mt = syn.get("rss") or {}, my.get("rss") or {}
        s, m = st.get("rss_peak_mib"), mt.get("rss_peak_mib")
        size = mt.get("size_mb") or st.get("size_mb")
        row(f"peak RSS during a {fmt(size)} MB upload (MiB)", s, m, "-", None, "< 100 MiB",
            None if not isinstance(m, (int, float)) else m < 100)
        print()
        print("Throughput is the median of the runs; the reference is `shutil.copyfile` of the same")
        print("file on the same disk. Each thumbnail request asks for a size not asked before, so")
        print("each one is made on that request. Peak RSS samples `VmRSS` every 20 ms during the")
        print(f"upload (VmHWM after it: Synapse {fmt(st.get('hwm_after_mib'))}, Myelin "
              f"{fmt(mt.get('hwm_after_mib'))} MiB).\n")
    print(MEDIA_END)


def splice(section_md, benchmarks_md, begin_marker, end_marker):
    """Replaces the section between the markers in BENCHMARKS.md (or adds it before the
    mxbench figures)."""
    section = open(section_md).read().strip()
    begin, end = section.find(begin_marker), section.find(end_marker)
    section = section[begin:end + len(end_marker)]
    text = open(benchmarks_md).read()
    b, e = text.find(begin_marker), text.find(end_marker)
    if b >= 0 and e > b:
        text = text[:b] + section + text[e + len(end_marker):]
    else:
        anchor = text.find("## All mxbench figures")
        anchor = anchor if anchor >= 0 else len(text)
        text = text[:anchor] + section + "\n\n" + text[anchor:]
    with open(benchmarks_md, "w") as f:
        f.write(text)


def splice_media(media_md, benchmarks_md):
    splice(media_md, benchmarks_md, MEDIA_BEGIN, MEDIA_END)


FEDERATION_BEGIN = "<!-- federation:begin -->"
FEDERATION_END = "<!-- federation:end -->"

# (label, path in bench/federation.py's report, better: "higher"|"lower", target: ratio or None)
FEDERATION_ROWS = [
    ("inbound PDUs in a busy room, held by B (messages/s)", ("inbound", "received_per_s"), "higher", 20),
    ("delivery send on A -> B's /sync, p50 (ms)", ("delivery", "latency_ms", "p50"), "lower", None),
    ("delivery send on A -> B's /sync, p99 (ms)", ("delivery", "latency_ms", "p99"), "lower", 10),
]


def federation_section(out, dbs):
    """The federation rows (bench/federation.py: a pair of Synapses, then a pair of Myelins),
    between markers so that a `--federation-only` run can replace them in BENCHMARKS.md."""
    print(FEDERATION_BEGIN)
    for db in dbs:
        syn = load(os.path.join(out, f"federation-synapse-{db}.json"))
        my = load(os.path.join(out, f"federation-myelin-{db}.json"))
        if not syn and not my:
            continue
        syn, my = syn or {}, my or {}
        for d in (syn, my):
            inbound = d.get("inbound") or {}
            if inbound.get("seconds") and inbound.get("received_on_b") is not None:
                inbound["received_per_s"] = round(inbound["received_on_b"] / inbound["seconds"], 1)
        quick = " (quick smoke run: not a figure)" if my.get("quick") or syn.get("quick") else ""
        commit = ""
        if os.path.exists(os.path.join(out, "commit")):
            commit = f", Myelin at {open(os.path.join(out, 'commit')).read().strip()}"
        print(f"## Federation, {db}{quick} (bench/federation.py: Synapse -> Synapse, then Myelin -> Myelin, "
              f"on loopback over TLS, run on {time.strftime('%Y-%m-%d')}{commit})\n")
        print("| measure | Synapse | Myelin | ratio | target | met |")
        print("|---|---|---|---|---|---|")
        for label, path, better, target in FEDERATION_ROWS:
            s, m = dig(syn, path), dig(my, path)
            ratio = None
            if isinstance(s, (int, float)) and isinstance(m, (int, float)) and s > 0 and m > 0:
                ratio = m / s if better == "higher" else s / m
            if target is None:
                met, ttxt = "-", "-"
            else:
                met = "yes" if ratio is not None and ratio >= target else ("no" if ratio is not None else "?")
                ttxt = f">= {target}x" if better == "higher" else f"<= 1/{target}"
            rtxt = f"{ratio:.1f}x" if ratio is not None else "-"
            print(f"| {label} | {fmt(s)} | {fmt(m)} | {rtxt} | {ttxt} | {met} |")
        sj, mj = syn.get("big_join") or {}, my.get("big_join") or {}
        n = mj.get("state_events") or sj.get("state_events")
        s, m = sj.get("join_s"), mj.get("join_s")
        ratio = s / m if isinstance(s, (int, float)) and isinstance(m, (int, float)) and m > 0 else None
        rtxt = f"{ratio:.1f}x" if ratio is not None else "-"
        met = "?" if not isinstance(m, (int, float)) else ("yes" if m < 5 else "no")
        print(f"| B joins a room on A with {n:,} state events, wall time (s) | {fmt(s)} | {fmt(m)} | {rtxt} | "
              f"< 5 s | {met} |" if n else "| remote join of a big room | - | - | - | < 5 s | ? |")
        s, m = sj.get("b_rss_peak_mib"), mj.get("b_rss_peak_mib")
        ratio = s / m if isinstance(s, (int, float)) and isinstance(m, (int, float)) and m > 0 else None
        rtxt = f"{ratio:.1f}x" if ratio is not None else "-"
        print(f"| B's peak RSS during that join (MiB) | {fmt(s)} | {fmt(m)} | {rtxt} | - | - |")
        print()
        si, mi = syn.get("inbound") or {}, my.get("inbound") or {}
        sd, md = syn.get("delivery") or {}, my.get("delivery") or {}
        print(f"Inbound: {fmt(mi.get('senders') or si.get('senders'))} users on A send "
              f"{fmt((mi.get('messages') or si.get('messages') or 1) - 1)} messages between them (one request in "
              "flight each), then the room's creator one more once all were answered, into a room "
              "a user on B has joined; the time runs from the first send to that last message's arrival in B's "
              "`/sync` long-poll, so A's own send rate is part of the figure. B then held "
              f"{fmt(si.get('received_on_b'))} (Synapse) and {fmt(mi.get('received_on_b'))} (Myelin) of them "
              "(`/messages`): the figure counts those. Sent over that time: Synapse "
              f"{fmt(si.get('messages_per_s'))}/s, Myelin {fmt(mi.get('messages_per_s'))}/s. A Synapse receiving "
              "faster than it processes prunes its inbound staging queue once 100 events wait, keeping only "
              "the forward extremities (the rest left to backfill). A's own send rate in that phase: Synapse "
              f"{fmt(si.get('send_on_a_per_s'))}/s, Myelin {fmt(mi.get('send_on_a_per_s'))}/s; the backlog after "
              f"the last send's answer took {fmt(si.get('last_send_to_last_seen_ms'))} ms (Synapse) and "
              f"{fmt(mi.get('last_send_to_last_seen_ms'))} ms (Myelin) to reach B.\n")
        print(f"Delivery: {fmt(md.get('messages') or sd.get('messages'))} messages one at a time, each from its "
              "send's answer on A to its arrival in B's `/sync` long-poll (from the send's request: p50 / p99 "
              f"Synapse {fmt(dig(sd, ('from_request_ms', 'p50')))} / {fmt(dig(sd, ('from_request_ms', 'p99')))} ms, "
              f"Myelin {fmt(dig(md, ('from_request_ms', 'p50')))} / {fmt(dig(md, ('from_request_ms', 'p99')))} ms).\n")
        print(f"Big join: the room's {n and f'{n:,}'} state events (a custom type, distinct state keys) were sent on A "
              f"by 4 concurrent requests (Synapse {fmt(sj.get('create_on_a_per_s'))}/s, Myelin "
              f"{fmt(mj.get('create_on_a_per_s'))}/s). The join's wall time is B's `/join` via A; B's RSS is "
              "`VmRSS` sampled every 20 ms during it (VmHWM after it: Synapse "
              f"{fmt(sj.get('b_hwm_after_mib'))}, Myelin {fmt(mj.get('b_hwm_after_mib'))} MiB). B then held "
              f"{fmt(sj.get('state_events_on_b'))} (Synapse) and {fmt(mj.get('state_events_on_b'))} (Myelin) of "
              "the state events (`/state`). Synapse joins with partial state (MSC3706: the members are "
              "fetched after the join answers); this room's state is its own custom events, which come "
              "with the join all the same.\n")
    print(FEDERATION_END)


SLIDING_SYNC_BEGIN = "<!-- sliding-sync:begin -->"
SLIDING_SYNC_END = "<!-- sliding-sync:end -->"

# (label, row key in bench/sliding_sync.py's report, figure, better, target ratio or None)
SLIDING_SYNC_ROWS = [
    ("first response, fresh connection, p50 (ms)", "first", "p50_ms", "lower", 10),
    ("first response, fresh connection, p99 (ms)", "first", "p99_ms", "lower", None),
    ("first response, the user's very first request (caches cold) (ms)", "first", "cold_ms", "lower", None),
    ("incremental response after one new message, p50 (ms)", "incremental", "p50_ms", "lower", None),
    ("incremental response after one new message, p99 (ms)", "incremental", "p99_ms", "lower", None),
    ("wake-up of a waiting request, send answered -> sync answered, p50 (ms)", "wakeup", "p50_ms", "lower", None),
    ("wake-up of a waiting request, send answered -> sync answered, p99 (ms)", "wakeup", "p99_ms", "lower", 20),
    ("reference: initial /sync v2, timeline limit 1, p50 (ms)", "v2_initial", "p50_ms", "lower", None),
    ("reference: incremental /sync v2 after one new message, p50 (ms)", "v2_incremental", "p50_ms", "lower", None),
]


def sliding_sync_section(out, dbs):
    """The sliding sync rows (bench/sliding_sync.py against both servers), between markers so
    that a `--sliding-sync-only` run can replace them in BENCHMARKS.md."""
    print(SLIDING_SYNC_BEGIN)
    for db in dbs:
        syn = load(os.path.join(out, f"sliding-sync-synapse-{db}.json"))
        my = load(os.path.join(out, f"sliding-sync-myelin-{db}.json"))
        if not syn and not my:
            continue
        syn, my = syn or {}, my or {}
        n = my.get("rooms") or syn.get("rooms")
        quick = " (quick smoke run: not a figure)" if my.get("quick") or syn.get("quick") else ""
        commit = ""
        if os.path.exists(os.path.join(out, "commit")):
            commit = f", Myelin at {open(os.path.join(out, 'commit')).read().strip()}"
        print(f"## Sliding sync, {db}{quick} (bench/sliding_sync.py against both: MSC4186, a user in "
              f"{f'{n:,}' if n else '?'} rooms, run on {time.strftime('%Y-%m-%d')}{commit})\n")
        print("| measure | Synapse | Myelin | ratio | target | met |")
        print("|---|---|---|---|---|---|")
        errors = []

        def cell(name, d, key, figure):
            row = d.get(key)
            if not isinstance(row, dict):
                return None, "unsupported" if d.get("unsupported") and not key.startswith("v2_") else "-"
            if "error" in row:
                text = f"{name}, {key}: {row['error']}"
                if text not in errors:
                    errors.append(text)
                return None, "error"
            v = row.get(figure)
            return v, fmt(v)

        sv, stxt = cell("Synapse", syn, "setup", "rooms_per_s")
        mv, mtxt = cell("Myelin", my, "setup", "rooms_per_s")
        ratio = mv / sv if isinstance(sv, (int, float)) and isinstance(mv, (int, float)) and sv > 0 else None
        print(f"| setup: rooms made per second (a room, two joins, a message) | {stxt} | {mtxt} | "
              f"{f'{ratio:.1f}x' if ratio is not None else '-'} | - | - |")
        for label, key, figure, better, target in SLIDING_SYNC_ROWS:
            s, stxt = cell("Synapse", syn, key, figure)
            m, mtxt = cell("Myelin", my, key, figure)
            ratio = None
            if isinstance(s, (int, float)) and isinstance(m, (int, float)) and s > 0 and m > 0:
                ratio = m / s if better == "higher" else s / m
            rtxt = f"{ratio:.1f}x" if ratio is not None else "-"
            if target is None:
                met, ttxt = "-", "-"
            elif key == "first":
                # Issue 15: under 50 ms at 1,000 rooms, and at least 10x faster than Synapse.
                ttxt = f"< 50 ms, >= {target}x"
                met = "?" if ratio is None or not n or n < 1000 else ("yes" if ratio >= target and m < 50 else "no")
            else:
                met = "yes" if ratio is not None and ratio >= target else ("no" if ratio is not None else "?")
                ttxt = f">= {target}x" if better == "higher" else f"<= 1/{target}"
            print(f"| {label} | {stxt} | {mtxt} | {rtxt} | {ttxt} | {met} |")
        s, m = syn.get("server_rss_mib_after"), my.get("server_rss_mib_after")
        print(f"| server RSS after the run (MiB) | {fmt(s)} | {fmt(m)} | - | - | - |")
        print()
        for name, d in (("Synapse", syn), ("Myelin", my)):
            if d.get("unsupported"):
                errors.append(f"{name}: the sliding sync endpoint answered {d['unsupported']}")
        if errors:
            print("Wrong answers (the row reports them instead of a figure): " + "; ".join(errors) + ".\n")
        sw, mw = syn.get("wakeup") or {}, my.get("wakeup") or {}
        print(f"Every sliding sync request asks for one list, range 0-19, timeline_limit 1, required_state "
              "name / avatar / encryption / lazy-loaded members. Setup: the user creates each room (public, a name, "
              "an avatar, every other room encrypted), two other users join it and one sends a message, "
              f"{fmt(dig(my, ('setup', 'workers')) or dig(syn, ('setup', 'workers')))} rooms at a time; then "
              f"{fmt(my.get('settle_s') if my.get('settle_s') is not None else syn.get('settle_s'))} s pass "
              "before the first measure (both servers). "
              f"First response: {fmt(dig(my, ('first', 'reps')) or dig(syn, ('first', 'reps')))} requests, "
              "a fresh `conn_id` each time, checked for the list's count (every room), 20 rooms "
              "and the room with the newest message first. Incremental: on one connection, a message from "
              "another user into a room outside the window, then a request with the last `pos` and timeout 0, "
              "checked for that message and that room first. Wake-up: a request with `pos` and timeout 30 s "
              "waits, then another user sends a message; the time from the send's answer to the waiting "
              "request's answer (from the send's request: p50 / p99 Synapse "
              f"{fmt(dig(sw, ('from_send_request_ms', 'p50')))} / {fmt(dig(sw, ('from_send_request_ms', 'p99')))} ms, "
              f"Myelin {fmt(dig(mw, ('from_send_request_ms', 'p50')))} / "
              f"{fmt(dig(mw, ('from_send_request_ms', 'p99')))} ms), checked for the message; "
              f"{fmt(mw.get('reps') or sw.get('reps'))} rounds. `/sync` v2 is the same user with a filter of "
              "timeline limit 1 and lazy-loaded members (initial: every joined room, each rep a distinct inline "
              "filter so no cached response is served; incremental: after one new message, checked for it). "
              "The timed requests go through Python's http.client over one keep-alive connection per thread, "
              "with the bench process's garbage collector off during each row (the same client for both "
              "servers).\n")
    print(SLIDING_SYNC_END)


APPSERVICE_BEGIN = "<!-- appservice:begin -->"
APPSERVICE_END = "<!-- appservice:end -->"

# (label, row key in bench/appservice.py's report, path in the row, better, target ratio or None)
APPSERVICE_ROWS = [
    ("events delivered to the appservice while the ghosts send (events/s)", "throughput", ("events_per_s",),
     "higher", 20),
    ("  the ghosts' sends answered (sends/s)", "throughput", ("sends_per_s",), "higher", None),
    ("  last send answered -> last event received (ms)", "throughput", ("last_send_to_last_receipt_ms",),
     "lower", None),
    ("  send latency under that load, p50 (ms)", "throughput", ("send_latency_ms", "p50"), "lower", None),
    ("lag, a client's send -> the appservice's receipt, idle, p50 (ms)", "lag", ("p50_ms",), "lower", None),
    ("lag, a client's send -> the appservice's receipt, idle, p99 (ms)", "lag", ("p99_ms",), "lower", 10),
    ("  lag from the send's answer, p50 (ms)", "lag", ("from_send_answer_ms", "p50"), "lower", None),
    ("  lag from the send's answer, p99 (ms)", "lag", ("from_send_answer_ms", "p99"), "lower", None),
]


def appservice_section(out, dbs):
    """The appservice rows (bench/appservice.py against both servers), between markers so that
    an `--appservice-only` run can replace them in BENCHMARKS.md."""
    print(APPSERVICE_BEGIN)
    for db in dbs:
        syn = load(os.path.join(out, f"appservice-synapse-{db}.json"))
        my = load(os.path.join(out, f"appservice-myelin-{db}.json"))
        if not syn and not my:
            continue
        syn, my = syn or {}, my or {}
        setup = my.get("setup") if isinstance(my.get("setup"), dict) and "rooms" in my["setup"] else syn.get("setup") or {}
        quick = " (quick smoke run: not a figure)" if my.get("quick") or syn.get("quick") else ""
        commit = ""
        if os.path.exists(os.path.join(out, "commit")):
            commit = f", Myelin at {open(os.path.join(out, 'commit')).read().strip()}"
        print(f"## Appservices, {db}{quick} (bench/appservice.py against both: {fmt(setup.get('rooms'))} rooms of "
              f"{fmt(setup.get('ghosts_per_room'))} ghosts, an appservice that answers at once, run on "
              f"{time.strftime('%Y-%m-%d')}{commit})\n")
        print("| measure | Synapse | Myelin | ratio | target | met |")
        print("|---|---|---|---|---|---|")
        errors = []

        def cell(name, d, key, path):
            row = d.get(key)
            if not isinstance(row, dict):
                return None, "-"
            if "error" in row:
                text = f"{name}, {key}: {row['error']}"
                if text not in errors:
                    errors.append(text)
                return None, "error"
            v = dig(row, path)
            return v, fmt(v)

        for label, key, path, better, target in [("setup: ghosts registered and joined per second", "setup",
                                                  ("ghosts_per_s",), "higher", None)] + APPSERVICE_ROWS:
            s, stxt = cell("Synapse", syn, key, path)
            m, mtxt = cell("Myelin", my, key, path)
            ratio = None
            if isinstance(s, (int, float)) and isinstance(m, (int, float)) and s > 0 and m > 0:
                ratio = m / s if better == "higher" else s / m
            rtxt = f"{ratio:.1f}x" if ratio is not None else "-"
            if target is None:
                met, ttxt = "-", "-"
            else:
                met = "yes" if ratio is not None and ratio >= target else ("no" if ratio is not None else "?")
                ttxt = f">= {target}x" if better == "higher" else f"<= 1/{target}"
            print(f"| {label} | {stxt} | {mtxt} | {rtxt} | {ttxt} | {met} |")
        s, m = syn.get("server_rss_mib_after"), my.get("server_rss_mib_after")
        print(f"| server RSS after the run (MiB) | {fmt(s)} | {fmt(m)} | - | - | - |")
        print()
        if errors:
            print("Wrong answers (the row reports them instead of a figure): " + "; ".join(errors) + ".\n")
        st, mt = syn.get("throughput") or {}, my.get("throughput") or {}
        sl, ml = syn.get("lag") or {}, my.get("lag") or {}
        print("The appservice's registration: users `@bench_.*` (exclusive), `rate_limited: false`, its URL a "
              "receiver in the bench process on loopback that answers each `PUT /_matrix/app/v1/transactions/{txnId}` "
              "with 200 {} at once and timestamps each event on arrival. Setup: a user creates the rooms (public); "
              "the ghosts register with `m.login.application_service` and join, masquerading with the as_token and "
              f"`?user_id=`. Throughput: the ghosts send {fmt(mt.get('messages') or st.get('messages'))} messages, "
              f"{fmt(mt.get('workers') or st.get('workers'))} requests in flight, spread over the rooms, each "
              "ghost's own messages one after another; the figure is the events the appservice received over the "
              "time from the first send to the last receipt, so the send rate bounds it. Checked: every event id "
              "a send answered arrives exactly once, with its room and sender, nothing else arrives, and each "
              "ghost's messages arrive in their send order; each room's arrivals are also compared with its "
              "`/messages` order (rooms differing: Synapse "
              f"{fmt(st.get('rooms_out_of_messages_order'))}, Myelin {fmt(mt.get('rooms_out_of_messages_order'))}; "
              f"transactions during the row: Synapse {fmt(st.get('transactions'))}, Myelin {fmt(mt.get('transactions'))}, "
              f"events per transaction: Synapse {fmt(st.get('events_per_transaction'))}, Myelin "
              f"{fmt(mt.get('events_per_transaction'))}). "
              f"Lag: {fmt(ml.get('reps') or sl.get('reps'))} rounds, the room's creator (not an appservice user) "
              "sends one message, then waits for the appservice to receive it before the next (20 ms apart); "
              "the time from the send's request to the event's arrival, checked for its content and a single "
              "arrival. The timed sends go through Python's http.client over one keep-alive connection, with the "
              "bench process's garbage collector off during the rounds (the same client for both servers); the "
              "p99 of 200 rounds is their third slowest, and moves a lot between runs on a shared machine (each "
              "round's figure is in the raw results).\n")
    print(APPSERVICE_END)


SCALE_BEGIN = "<!-- scale:begin -->"
SCALE_END = "<!-- scale:end -->"


ADMIN_BEGIN = "<!-- admin:begin -->"
ADMIN_END = "<!-- admin:end -->"

# (label, row key in bench/admin.py's report) of the list pages: p50 and p99 of each.
ADMIN_LIST_ROWS = [
    ("`GET /v2/users` from=0 limit=100", "users_first"),
    ("`GET /v2/users` deep page (from=users/2)", "users_deep"),
    ("`GET /v2/users` name=<substring> search", "users_search"),
    ("`GET /v2/users` order_by=name", "users_by_name"),
    ("`GET /v2/users` order_by=creation_ts dir=b", "users_by_creation"),
    ("`GET /v1/rooms` order_by=joined_members", "rooms_by_members"),
    ("`GET /v1/rooms` order_by=name", "rooms_by_name"),
    ("`GET /v1/rooms` search_term=<a room's name>", "rooms_search"),
]


def admin_section(out, dbs):
    """The admin API rows (bench/admin.py against both servers), between markers so that an
    `--admin-only` run can replace them in BENCHMARKS.md."""
    print(ADMIN_BEGIN)

    def count(n):
        return f"{n:,}" if isinstance(n, int) else fmt(n)

    for db in dbs:
        syn = load(os.path.join(out, f"admin-synapse-{db}.json"))
        my = load(os.path.join(out, f"admin-myelin-{db}.json"))
        if not syn and not my:
            continue
        syn, my = syn or {}, my or {}
        seed_s, seed_m = syn.get("seed") or {}, my.get("seed") or {}
        users = seed_m.get("users") or seed_s.get("users")
        rooms = seed_m.get("rooms") or seed_s.get("rooms")
        ev_s, ev_m = syn.get("events") or {}, my.get("events") or {}
        quick = " (quick smoke run: not a figure)" if my.get("quick") or syn.get("quick") else ""
        commit = ""
        if os.path.exists(os.path.join(out, "commit")):
            commit = f", Myelin at {open(os.path.join(out, 'commit')).read().strip()}"
        print(f"## Admin API, {db}{quick} (bench/admin.py against both: {count(users)} users, {count(rooms)} rooms, "
              f"run on {time.strftime('%Y-%m-%d')}{commit})\n")
        print("| measure | Synapse | Myelin | ratio | target | met |")
        print("|---|---|---|---|---|---|")
        errors = []
        for name, d in (("Synapse", syn), ("Myelin", my)):
            if d.get("setup_error"):
                errors.append(f"{name}, setup: {d['setup_error']}")

        def cell(name, d, key, figure):
            row = d.get(key)
            if not isinstance(row, dict):
                return None, "-"
            if "error" in row:
                text = f"{name}, {key}: {row['error']}"
                if text not in errors:
                    errors.append(text)
                return None, "error"
            v = row.get(figure)
            return v, fmt(v)

        def rtext(r):
            return "-" if r is None else (f"{r:.1f}x" if r >= 1 else f"{r:.2f}x")

        def ratio_of(s, m):
            if isinstance(s, (int, float)) and isinstance(m, (int, float)) and s > 0 and m > 0:
                return s / m
            return None

        for label, key, figure in (("seeding: users through the admin API (users/s)", "seed", "http_users_per_s"),
                                   ("seeding: rooms through createRoom (rooms/s)", "seed", "http_rooms_per_s")):
            s, stxt = cell("Synapse", syn, key, figure)
            m, mtxt = cell("Myelin", my, key, figure)
            r = ratio_of(m, s)
            print(f"| {label} | {stxt} | {mtxt} | {rtext(r)} | - | - |")
        s, m = ev_s.get("events_per_s"), ev_m.get("events_per_s")
        r = ratio_of(m, s)
        print(f"| seeding: messages into one room, {fmt(ev_s.get('senders') or ev_m.get('senders'))} senders "
              f"(events/s) | {fmt(s)} | {fmt(m)} | {rtext(r)} | - | - |")
        for label, key in ADMIN_LIST_ROWS:
            for figure, target in (("p50_ms", True), ("p99_ms", False)):
                s, stxt = cell("Synapse", syn, key, figure)
                m, mtxt = cell("Myelin", my, key, figure)
                r = ratio_of(s, m)
                rtxt = rtext(r)
                if target:
                    # Issue 16: list pages under 50 ms, and at least 10x faster than Synapse.
                    ttxt = "< 50 ms, >= 10x"
                    met = "?" if r is None or quick else ("yes" if r >= 10 and m < 50 else "no")
                else:
                    ttxt, met = "< 50 ms", ("?" if m is None or quick else ("yes" if m < 50 else "no"))
                print(f"| {label}, {figure[:3]} (ms) | {stxt} | {mtxt} | {rtxt} | {ttxt} | {met} |")
        n_events = ev_m.get("sent") or ev_s.get("sent")
        s, stxt = cell("Synapse", syn, "delete", "seconds")
        m, mtxt = cell("Myelin", my, "delete", "seconds")
        r = ratio_of(s, m)
        met = "?" if r is None or quick else ("yes" if r >= 10 else "no")
        print(f"| `DELETE /v2/rooms` with purge of a room of {count(n_events)} messages, request to status "
              f"`complete` (s) | {stxt} | {mtxt} | {rtext(r)} | >= 10x | {met} |")
        s, m = syn.get("server_rss_mib_after"), my.get("server_rss_mib_after")
        print(f"| server RSS after the run (MiB) | {fmt(s)} | {fmt(m)} | - | - | - |")
        print()
        if errors:
            print("Wrong answers (the row reports them instead of a figure): " + "; ".join(errors) + ".\n")
        reps = my.get("reps") or syn.get("reps")
        print(f"Seeding. Users: the first {fmt(seed_m.get('http_users') or seed_s.get('http_users'))} through "
              "`PUT /_synapse/admin/v2/users/{id}` (a display name, no password), "
              f"{fmt(seed_m.get('workers') or seed_s.get('workers'))} requests in flight; the rest "
              f"on Synapse by {seed_s.get('bulk_users_method') or '-'} into `users` and `profiles` "
              f"({fmt(seed_s.get('bulk_users_s'))} s), on Myelin by {seed_m.get('bulk_users_method') or '-'} "
              f"({fmt(seed_m.get('bulk_users_s'))} s, {fmt(seed_m.get('bulk_users_per_s'))} users/s). "
              f"Rooms: the first {fmt(seed_m.get('http_rooms') or seed_s.get('http_rooms'))} through `createRoom` "
              "(private, named, by the admin); the rest on Synapse by "
              f"{seed_s.get('bulk_rooms_method') or '-'} into `rooms`, `room_stats_state` and "
              f"`room_stats_current` ({fmt(seed_s.get('bulk_rooms_s'))} s), on Myelin by "
              f"{seed_m.get('bulk_rooms_method') or '-'} ({fmt(seed_m.get('bulk_rooms_s'))} s, "
              f"{fmt(seed_m.get('bulk_rooms_per_s'))} rooms/s). At Synapse's HTTP rates above, seeding it all "
              "through the API would have taken "
              + (f"{(users or 0) / seed_s['http_users_per_s'] / 60:.0f} min for the users and "
                 f"{(rooms or 0) / seed_s['http_rooms_per_s'] / 60:.0f} min for the rooms."
                 if seed_s.get("http_users_per_s") and seed_s.get("http_rooms_per_s") else "(not measured).")
              + f" Message room: {fmt(ev_s.get('sent'))} (Synapse, {fmt(ev_s.get('seconds'))} s"
              + (", cut by the time limit" if ev_s.get("time_limited") else "")
              + f") and {fmt(ev_m.get('sent'))} (Myelin, {fmt(ev_m.get('seconds'))} s"
              + (", cut by the time limit" if ev_m.get("time_limited") else "")
              + ") messages sent by the admin through `PUT /rooms/{id}/send`; Myelin is given no more than "
              "Synapse reached.\n")
        ds, dm = syn.get("delete") or {}, my.get("delete") or {}
        print(f"Each list row is {fmt(reps)} sequential requests of 100 entries (p50 / p99), each answer checked: "
              "the total is every user seeded plus the admin (every room made plus the message room), a page "
              "holds 100 entries, the name search finds exactly the user whose localpart holds the number "
              "searched, the room search exactly the room of that name, and each ordering is checked on "
              "the page. The delete row runs from the `DELETE` request to the first "
              "`GET /_synapse/admin/v2/rooms/delete_status/{delete_id}` (polled every 50 ms) answering "
              f"`complete` (the `DELETE` itself answered in {fmt(ds.get('accepted_ms'))} ms on Synapse and "
              f"{fmt(dm.get('accepted_ms'))} ms on Myelin; the room's details then answered "
              f"{fmt(ds.get('room_details_after'))} and {fmt(dm.get('room_details_after'))}). "
              "The timed requests go through Python's http.client over one keep-alive connection "
              "(the same client for both servers).\n")
    print(ADMIN_END)


SCALE_BEGIN = "<!-- scale:begin -->"
SCALE_END = "<!-- scale:end -->"


def main():
    if sys.argv[1] == "--e2ee-only":
        out = sys.argv[2]
        dbs = sorted({os.path.basename(p)[len("e2ee-myelin-"):-5] for p in glob.glob(os.path.join(out, "e2ee-myelin-*.json"))})
        e2ee_section(out, dbs)
        return
    if sys.argv[1] == "--media-only":
        out = sys.argv[2]
        dbs = sorted({os.path.basename(p)[len("media-myelin-"):-5] for p in glob.glob(os.path.join(out, "media-myelin-*.json"))})
        media_section(out, dbs)
        return
    if sys.argv[1] == "--splice-media":
        splice_media(sys.argv[2], sys.argv[3])
        return
    if sys.argv[1] == "--federation-only":
        out = sys.argv[2]
        dbs = sorted({os.path.basename(p)[:-5].split("-", 2)[2]
                      for p in glob.glob(os.path.join(out, "federation-*-*.json"))})
        federation_section(out, dbs)
        return
    if sys.argv[1] == "--splice-federation":
        splice(sys.argv[2], sys.argv[3], FEDERATION_BEGIN, FEDERATION_END)
        return
    if sys.argv[1] == "--sliding-sync-only":
        out = sys.argv[2]
        dbs = sorted({os.path.basename(p)[:-5].split("-", 3)[3]
                      for p in glob.glob(os.path.join(out, "sliding-sync-*-*.json"))})
        sliding_sync_section(out, dbs)
        return
    if sys.argv[1] == "--splice-sliding-sync":
        splice(sys.argv[2], sys.argv[3], SLIDING_SYNC_BEGIN, SLIDING_SYNC_END)
        return
    if sys.argv[1] == "--appservice-only":
        out = sys.argv[2]
        dbs = sorted({os.path.basename(p)[:-5].split("-", 2)[2]
                      for p in glob.glob(os.path.join(out, "appservice-*-*.json"))})
        appservice_section(out, dbs)
        return
    if sys.argv[1] == "--splice-appservice":
        splice(sys.argv[2], sys.argv[3], APPSERVICE_BEGIN, APPSERVICE_END)
        return
    if sys.argv[1] == "--admin-only":
        out = sys.argv[2]
        dbs = sorted({os.path.basename(p)[:-5].split("-", 2)[2]
                      for p in glob.glob(os.path.join(out, "admin-*-*.json"))})
        admin_section(out, dbs)
        return
    if sys.argv[1] == "--splice-admin":
        splice(sys.argv[2], sys.argv[3], ADMIN_BEGIN, ADMIN_END)
        return
    out = sys.argv[1]
    commit_file = os.path.join(out, "commit")
    if os.path.exists(commit_file):
        commit = open(commit_file).read().strip()
    else:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    print("# Benchmarks: Myelin beside Synapse\n")
    print(f"Run on {time.strftime('%Y-%m-%d')} ({os.path.basename(out)}), {os.cpu_count()} cores ({cpu_model()}),")
    print(f"{platform.system()} {platform.release()}, Myelin at commit {commit}.\n")
    print("Reproduce with `bench/run.sh` (`--db both` adds PostgreSQL, `--quick` is a smoke run).")
    print("Both servers run on loopback with equivalent settings: open registration, rate limits off,")
    print("presence on, bcrypt cost 12 for both (registration and login compare at equal hash cost:")
    print("they measure bcrypt, not the server), logs at warning level, the client API only.")
    print("Figures from `mxbench` (the shared Python client) are marked *mx*; figures from")
    print("`bench/loadgen` (a Rust client running the same throughput phases, which stays well below")
    print("one core where the Python client saturates one) are marked *lg*. Ratios use the better")
    print("Myelin figure; absolute numbers on a shared 2-core machine move between runs.\n")
    dbs = sorted({os.path.basename(p).split("-", 1)[1][:-5] for p in glob.glob(os.path.join(out, "synapse-*.json"))})
    for db in dbs:
        syn = load(os.path.join(out, f"synapse-{db}.json")) or {}
        my = load(os.path.join(out, f"myelin-{db}.json")) or {}
        lg = load(os.path.join(out, f"loadgen-myelin-{db}.json")) or {}
        sh, mh = syn.get("headline", {}), my.get("headline", {})
        version = (syn.get("server") or {}).get("server_header") or "Synapse"
        print(f"## Targets, {db} ({version})\n")
        print("| measure | Synapse *mx* | Myelin *mx* | Myelin *lg* | ratio | target | met |")
        print("|---|---|---|---|---|---|---|")
        for label, key, lg_path, better, target in TARGETS:
            s, m = sh.get(key), mh.get(key)
            l = dig(lg, lg_path) if lg_path else None
            candidates = [v for v in (m, l) if isinstance(v, (int, float)) and v > 0]
            best = (max(candidates) if better == "higher" else min(candidates)) if candidates else None
            ratio = None
            if isinstance(s, (int, float)) and s > 0 and best:
                ratio = best / s if better == "higher" else s / best
            met = "yes" if ratio is not None and ratio >= target else ("no" if ratio is not None else "?")
            rtxt = f"{ratio:.1f}x" if ratio is not None else "-"
            ttxt = f">= {target}x" if better == "higher" else f"<= 1/{target}"
            print(f"| {label} | {fmt(s)} | {fmt(m)} | {fmt(l)} | {rtxt} | {ttxt} | {met} |")
        print()
        # Contention: the Python client near a full core means it set the figure.
        notes = []
        for name, d in (("Synapse", syn), ("Myelin", my)):
            for phase, body in (d.get("results") or {}).items():
                if not isinstance(body, dict):
                    continue
                for sub in [body] + [v for v in body.values() if isinstance(v, dict)]:
                    c = sub.get("client_cpu_cores")
                    o = sub.get("host_other_cpu_cores")
                    if isinstance(c, (int, float)) and c >= 0.85:
                        notes.append(f"{name} {phase}: the Python client used {c} cores")
                    if isinstance(o, (int, float)) and o > 0.25:
                        notes.append(f"{name} {phase}: other processes used {o} cores (contended)")
        if notes:
            print("Contention notes: " + "; ".join(sorted(set(notes))) + ".\n")
    e2ee_section(out, dbs)
    media_section(out, dbs)
    files = sorted(glob.glob(os.path.join(out, "synapse-*.json")) + glob.glob(os.path.join(out, "myelin-*.json")))
    if files:
        print("## All mxbench figures\n")
        table = subprocess.run([sys.executable, os.path.join(SHARED, "bench", "table.py"), *files], capture_output=True, text=True)
        print(table.stdout)
    lgs = sorted(glob.glob(os.path.join(out, "loadgen-*.json")))
    if lgs:
        print("## bench/loadgen figures (Myelin)\n")
        print("| phase | " + " | ".join(os.path.basename(f)[8:-5] for f in lgs) + " |")
        print("|---|" + "---|" * len(lgs))
        data = [load(f) or {} for f in lgs]
        for label, path in [
            ("register (users/s, bcrypt 12)", ("register", "per_s")),
            ("send, 1 room, 10 senders (events/s)", ("send_one_room", "events_per_s")),
            ("  p50 / p99 (ms)", None),
            ("  server / client CPU (cores)", None),
            ("send, 100 rooms (events/s)", ("send_many_rooms", "events_per_s")),
            ("joins (joins/s)", ("joins", "per_s")),
            ("delivery p50 / p99 (ms)", None),
        ]:
            cells = []
            for d in data:
                if path:
                    cells.append(fmt(dig(d, path)))
                elif label.startswith("  p50"):
                    cells.append(f"{fmt(dig(d, ('send_one_room', 'latency_ms', 'p50')))} / {fmt(dig(d, ('send_one_room', 'latency_ms', 'p99')))}")
                elif label.startswith("  server"):
                    cells.append(f"{fmt(dig(d, ('send_one_room', 'server_cpu_cores')))} / {fmt(dig(d, ('send_one_room', 'client_cpu_cores')))}")
                else:
                    cells.append(f"{fmt(dig(d, ('delivery', 'latency_ms', 'p50')))} / {fmt(dig(d, ('delivery', 'latency_ms', 'p99')))}")
            print(f"| {label} | " + " | ".join(cells) + " |")
        print()
    notes = os.path.join(HERE, "NOTES.md")
    if os.path.exists(notes):
        print(open(notes).read())
    # The federation section (bench/run.sh --federation-only), the sliding sync section
    # (--sliding-sync-only), the appservices section (--appservice-only), the admin API section
    # (--admin-only) and the scale section (bench/scale.sh) are kept from the previous BENCHMARKS.md.
    previous = os.path.join(HERE, "..", "BENCHMARKS.md")
    if os.path.exists(previous):
        text = open(previous).read()
        for begin_marker, end_marker in ((FEDERATION_BEGIN, FEDERATION_END),
                                         (SLIDING_SYNC_BEGIN, SLIDING_SYNC_END),
                                         (APPSERVICE_BEGIN, APPSERVICE_END), (ADMIN_BEGIN, ADMIN_END),
                                         (SCALE_BEGIN, SCALE_END)):
            begin, end = text.find(begin_marker), text.find(end_marker)
            if begin >= 0 and end > begin:
                print(text[begin:end + len(end_marker)])
                print()


if __name__ == "__main__":
    main()
