#!/usr/bin/env bash
# Shoal's end-to-end benchmark beside Dask and Ray, in one command, printed as one table.
#
#   node/benches/compare.sh [--quick] [--runs N] [-- SWARM-BENCH-ARGS...]
#
# 1. builds the `shoal` binary (the idle-memory figure runs two `shoal worker` processes);
# 2. runs the peers' scripts ($root/../shared/peers/run_peers.py: Dask and Ray, N runs each,
#    alternating; their JSON lines go to $OUT);
# 3. runs `cargo bench -p shoal-node --bench swarm -- --peers $OUT`, which measures Shoal and prints
#    every figure beside the peers' medians from step 2, with ratios.
#
# Environment: PEERS_DIR (default $root/../shared/peers), PEERS_PY (default $root/../venv-peers/bin/python,
# a venv with `pip install "dask[distributed]" ray psutil`), OUT (default a fresh temp file).
set -euo pipefail

quick=()
runs=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=(--quick); shift ;;
        --runs) runs="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [--quick] [--runs N] [-- SWARM-BENCH-ARGS...]" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "$0")/../.." && pwd)"
peers_dir="${PEERS_DIR:-$root/../shared/peers}"
py="${PEERS_PY:-$root/../venv-peers/bin/python}"
out="${OUT:-$(mktemp -t shoal-peers-XXXXXX.jsonl)}"
work="$(mktemp -d -t shoal-peers-work-XXXXXX)"

cd "$root"
echo "== $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(uname -r), commit $(git rev-parse --short HEAD)" >&2
cargo build --release -p shoal-worker >&2
if [[ -x "$py" ]]; then
    echo "== Dask and Ray: $runs run(s) each -> $out" >&2
    "$py" "$peers_dir/run_peers.py" --runs "$runs" --out "$out" --work-dir "$work" "${quick[@]}" >&2
else
    echo "== no Python venv at $py: Shoal only (see node/benches/compare.sh)" >&2
fi
echo "== Shoal" >&2
cargo bench -p shoal-node --bench swarm -- --peers "$out" --shoal-bin "$root/target/release/shoal" "${quick[@]}" "$@"
rm -rf "$work"
