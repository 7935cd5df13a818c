#!/usr/bin/env bash
# The load scenarios of docs/PERFORMANCE.md, each one command:
#
#   scripts/bench-scenarios.sh SCENARIO [RUNS]
#
# SCENARIO: scale (100 / 1,000 / 10,000 workers at 5 s), heartbeats-10k,
# peak-ingest, paced-ingest, dispatch, dispatch-paced, dispatch-mongodb,
# websocket, churn, million, restart-empty, million-mongodb. RUNS (default 3) repeats it; each run prints one line of
# the load generator's JSON summary. Needs release binaries
# (`cargo build --release --bins`); dispatch-mongodb needs nx-27017.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: $0 SCENARIO [RUNS]}
runs=${2:-3}
loadgen=target/release/cloudai-loadgen
[ -x "$loadgen" ] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"; [ -n "${nx_pid:-}" ] && kill "$nx_pid" 2>/dev/null || true' EXIT

# Prints the fields of a summary that matter for the scenario.
show() {
  python3 - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); what = sys.argv[2]
h, w, c, x = d["heartbeats"], d["websocket"], d["churn"], d["dispatch"]
ms = lambda us: f"{us / 1000:.1f} ms"
rss = f"RSS {d['master_rss_bytes'] / 2**20:.0f} MB"
if what == "heartbeats":
    print(f"{d['workers']} workers @ {d['heartbeat_interval_ms']} ms: {h['per_second']:.0f} hb/s, "
          f"rpc p50 {ms(h['rpc_latency']['p50_us'])} p99 {ms(h['rpc_latency']['p99_us'])}, "
          f"master CPU {h['master_cpu_percent_of_one_core']:.1f}% of a core, {rss}, "
          f"setup {d['setup_seconds']:.1f} s, dropped {h['telemetry_dropped_by_master']}")
elif what == "dispatch":
    print(f"{x['completed']}/{x['tasks']} tasks, {x['per_second']:.0f} tasks/s, submit->assign "
          f"p50 {ms(x['submit_to_assign']['p50_us'])} p99 {ms(x['submit_to_assign']['p99_us'])}, {rss}")
elif what == "million":
    r, m = d["restart"], x["master_rss_bytes"] or {}  # no samples in a run without tasks
    mb = lambda b: f"{b / 2**20:.0f} MB" if b else "?"
    print(f"{x['completed']}/{x['tasks']} tasks through {d['workers']} workers: {x['per_second']:.0f} tasks/s, "
          f"last tenth {x['last_tenth_per_second'] or 0:.0f}/s, submit->assign p99 {ms(x['submit_to_assign']['p99_us'])}; "
          f"RSS start {mb(m.get('start'))} middle {mb(m.get('middle'))} end {mb(m.get('end'))}; restart with {r['queued']} queued: "
          f"serving {r['serving_seconds']:.2f} s, first placement {r['first_placement_seconds'] or 0:.2f} s, "
          f"RSS {mb(r['master_rss_bytes']['serving'])} serving, {mb(r['master_rss_bytes']['after_queue'])} after the queue")
elif what == "websocket":
    print(f"{w['clients']} clients (+{w['stalled_clients']} stalled) x {d['workers']} workers: "
          f"{h['sent']} events, received min {w['telemetry_received_min']} max {w['telemetry_received_max']}, "
          f"missed {w['missed']}, delivery p50 {ms(w['delivery_latency']['p50_us'])} "
          f"p99 {ms(w['delivery_latency']['p99_us'])}, master CPU {h['master_cpu_percent_of_one_core']:.0f}%, {rss}")
elif what == "churn":
    print(f"{c['workers']} of {d['workers']} workers silent then back: seen inactive {c['seen_inactive_max']}, "
          f"registered again {c['came_back']}, active at the end {c['active_at_end']}; "
          f"{h['sent']} heartbeats, {h['failed']} failed")
PY
}

run() { # what, loadgen args...
  local what=$1; shift
  for i in $(seq "$runs"); do
    "$loadgen" "$@" --json "$out/$i.json" >/dev/null 2>"$out/$i.err" || { tail -5 "$out/$i.err"; exit 1; }
    show "$out/$i.json" "$what"
  done
}

# Starts nx-27017 on a free port with its data in $out/$1: sets port and nx_pid.
start_nx() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$out/$1"
  nx-27017 --data-dir "$out/$1" --host 127.0.0.1 -p "$port" --pid-file "$out/$1/pid" \
    --log-file "$out/$1/log" >/dev/null 2>&1 &
  nx_pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}

million="--workers 10000 --heartbeat-ms 5000 --duration 10 --submitters 64 --restart --queued 10000"

case "$scenario" in
  scale)
    for n in 100 1000 10000; do run heartbeats --workers "$n" --heartbeat-ms 5000 --duration 20 --tasks 0; done ;;
  heartbeats-10k) run heartbeats --workers 10000 --heartbeat-ms 5000 --duration 30 --tasks 0 ;;
  peak-ingest)    run heartbeats --workers 1000 --heartbeat-ms 0 --duration 10 --tasks 0 ;;
  paced-ingest)   run heartbeats --workers 2000 --heartbeat-ms 100 --duration 10 --tasks 0 ;;
  dispatch)       run dispatch --workers 1000 --heartbeat-ms 5000 --duration 2 --tasks 5000 ;;
  dispatch-paced) run dispatch --workers 1000 --heartbeat-ms 5000 --duration 2 --tasks 5000 --task-rate 1000 ;;
  dispatch-mongodb)
    command -v nx-27017 >/dev/null || { echo "pip install nx-27017" >&2; exit 1; }
    for i in $(seq "$runs"); do
      start_nx "nx$i"
      runs=1 run dispatch --workers 1000 --heartbeat-ms 5000 --duration 2 --tasks 2000 \
        "--master-arg=--mongodb-uri=mongodb://127.0.0.1:$port/?directConnection=true"
      kill "$nx_pid"; wait "$nx_pid" 2>/dev/null || true; nx_pid=
    done ;;
  # 1,000,000 tasks through 10,000 workers, then a restart with 10,000 queued;
  # restart-empty is the same restart with no history, to compare with.
  million)        run million $million --tasks 1000000 ;;
  restart-empty)  run million $million --tasks 0 ;;
  million-mongodb)
    command -v nx-27017 >/dev/null || { echo "pip install nx-27017" >&2; exit 1; }
    start_nx nx
    runs=1 run million --workers 1000 --heartbeat-ms 5000 --duration 2 --tasks 5000 --restart --queued 1000 \
      "--master-arg=--mongodb-uri=mongodb://127.0.0.1:$port/?directConnection=true" ;;
  websocket)      run websocket --workers 1000 --heartbeat-ms 5000 --duration 20 --ws-clients 1000 --stalled-clients 1 --tasks 0 ;;
  churn)          run churn --workers 1000 --heartbeat-ms 1000 --duration 20 --churn-percent 10 --tasks 0 ;;
  *) echo "unknown scenario '$scenario'; see the comment at the top of $0" >&2; exit 2 ;;
esac
