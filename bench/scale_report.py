"""Writes the Scale section of BENCHMARKS.md from bench/scale.sh's results.

Usage: python scale_report.py OUT_DIR BENCHMARKS_MD

The section sits between two markers and replaces the previous one (bench/report.py keeps it
when it rewrites the rest of the file).
"""
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

BEGIN = "<!-- scale:begin -->"
END = "<!-- scale:end -->"


def load(out, name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else {}


def lat(d, *path):
    for key in path:
        d = (d or {}).get(key) or {}
    lm = d.get("latency_ms") or {}
    if not lm.get("count"):
        return "n/a"
    return f"{lm['p50']} / {lm['p99']}"


def mib(n):
    return f"{n / 1048576:.1f} MiB"


def main():
    out, target = sys.argv[1], sys.argv[2]
    setup, seed, big = load(out, "setup.json"), load(out, "seed.json"), load(out, "big-room.json")
    many, members, changes = load(out, "many-rooms.json"), load(out, "big-members.json"), load(out, "state-changes.json")
    db_events, db_state = load(out, "db-events.json"), load(out, "db-state.json")
    commit_file = os.path.join(out, "commit")
    if os.path.exists(commit_file):
        commit = open(commit_file).read().strip()
    else:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    setup_file = os.path.join(out, "setup.json")
    ran = datetime.fromtimestamp(os.path.getmtime(setup_file) if os.path.exists(setup_file) else 0, timezone.utc)
    cpus = os.cpu_count()
    lines = [BEGIN, "## Scale (Myelin alone, SQLite)", ""]
    lines.append(
        f"Run {ran:%Y-%m-%d %H:%M} UTC, Myelin {commit}, {platform.machine()} with {cpus} cores, "
        "by `bench/scale.sh`. Latencies are client-side over HTTP on loopback, p50 / p99 in ms, one request at a time "
        "unless said. The big room is filled through the service layer's bulk write path with the server stopped "
        f"({seed.get('events_per_s', 'n/a')} events/s); everything below it is measured over HTTP.\n"
    )
    ev = seed.get("events", 0)
    lines += [
        f"### A room of {ev:,} events", "",
        "| measure | p50 / p99 (ms) |", "|---|---|",
        f"| initial `/sync`, timeline limit 20 | {lat(big, 'initial_sync_timeline_20')} |",
        f"| `/messages` paging back from the end, 100 a page ({(big.get('messages_from_end') or {}).get('pages', 0)} pages) | {lat(big, 'messages_from_end')} |",
        f"| `/messages` paging back from the middle, 100 a page ({(big.get('messages_from_middle') or {}).get('pages', 0)} pages) | {lat(big, 'messages_from_middle')} |",
        f"| `/context`, limit 10 | {lat(big, 'context_limit_10')} |",
        f"| incremental `/sync` after a send | {lat(big, 'incremental_sync_after_send')} |",
        "",
    ]
    r = many.get("rooms", 0)
    lines += [
        f"### One user in {r:,} rooms", "",
        "| measure | figure |", "|---|---|",
        f"| create a room and send into it, 10 in flight | {(many.get('create_rooms') or {}).get('per_s', 'n/a')} rooms/s |",
        f"| initial `/sync` (timeline limit 10, members lazily loaded), p50 / p99 ms | {lat(many, 'initial_sync')} |",
        f"| incremental `/sync` after a send into one of them, p50 / p99 ms | {lat(many, 'incremental_sync_after_send')} |",
        "",
    ]
    m = members.get("members", 0)
    joins = members.get("joins") or {}
    lines += [
        f"### A room of {m:,} members", "",
        "| measure | figure |", "|---|---|",
        f"| joins, 10 in flight | {joins.get('per_s', 'n/a')} joins/s |",
        f"| join latency, first tenth of the room / last tenth, p50 / p99 ms | "
        f"{(joins.get('first_tenth_latency_ms') or {}).get('p50', 'n/a')} / {(joins.get('first_tenth_latency_ms') or {}).get('p99', 'n/a')}"
        f" ; {(joins.get('last_tenth_latency_ms') or {}).get('p50', 'n/a')} / {(joins.get('last_tenth_latency_ms') or {}).get('p99', 'n/a')} |",
        f"| send a message into it, p50 / p99 ms | {lat(members, 'send_big_room')} |",
        f"| send a message into a room of one, p50 / p99 ms | {lat(members, 'send_room_of_one')} |",
        f"| push-rule evaluation per member per message (difference of the p50s) | {members.get('push_cost_per_member_us', 'n/a')} µs |",
        f"| `/members`, p50 / p99 ms | {lat(members, 'members_endpoint')} |",
        f"| `/joined_members`, p50 / p99 ms | {lat(members, 'joined_members_endpoint')} |",
        f"| a member's initial `/sync` (members lazily loaded), p50 / p99 ms | {lat(members, 'member_initial_sync_lazy')} |",
        f"| {changes.get('changes', 0):,} topic changes in it, one at a time, p50 / p99 ms | {lat(changes)} |",
        "",
    ]
    lines += ["### Database size", "", "| measure | size |", "|---|---|"]
    if db_events.get("events"):
        per = (db_events["after"] - db_events["before"]) * 100000 / db_events["events"]
        lines.append(f"| per 100,000 messages (from {db_events['events']:,} in one room) | {mib(per)} |")
    if db_state.get("changes"):
        per = (db_state["after"] - db_state["before"]) * 1000 / db_state["changes"]
        lines.append(f"| per 1,000 state changes in a room of {m:,} members | {mib(per)} |")
    if db_state.get("after"):
        lines.append(f"| the whole database at the end | {mib(db_state['after'])} |")
    lines += ["", "### Server RSS", "", "| when | RSS |", "|---|---|"]
    for label, value in [
        ("idle, fresh start on an empty database", setup.get("rss_mib_idle")),
        (f"idle, after a restart on the {ev:,}-event database", big.get("rss_mib_idle")),
        ("after the big-room phase", big.get("rss_mib_after")),
        (f"after the {r:,}-rooms phase", many.get("rss_mib_after")),
        (f"after {m:,} joins", members.get("rss_mib_after_joins")),
        (f"after the {m:,}-member phase", members.get("rss_mib_after")),
        ("after the state changes", changes.get("rss_mib_after")),
    ]:
        lines.append(f"| {label} | {value if value is not None else 'n/a'} MiB |")
    notes = os.path.join(os.path.dirname(__file__), "SCALE_NOTES.md")
    if os.path.exists(notes):
        lines += ["", open(notes).read().strip()]
    lines += [END, ""]
    section = "\n".join(lines)
    text = open(target).read() if os.path.exists(target) else "# Benchmarks\n\n"
    begin, end = text.find(BEGIN), text.find(END)
    if begin >= 0 and end > begin:
        text = text[:begin] + section.rstrip("\n") + text[end + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    open(target, "w").write(text)


if __name__ == "__main__":
    main()
