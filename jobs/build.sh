#!/usr/bin/env bash
# Rebuilds every task program in jobs/src into jobs/wasm/NAME.wasm (committed), and native
# executables of the same sources into jobs/build/native/NAME (for benchmarks; not committed).
#
#   jobs/build.sh            rebuild the .wasm and the native executables
#   jobs/build.sh --check    rebuild into a temporary folder and fail if any committed .wasm differs
#
# Needs Debian's clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (CI installs them). Tasks in
# Zig (jobs/src/zig) need Zig 0.17.1, the version the committed .wasm were built with:
# `pip install ziglang==0.17.1` gives it as `python3 -m ziglang`; set ZIG to the command if it is
# not `zig` on PATH or that module (CI sets it). Without Zig, the Zig tasks are skipped, loudly.
# Tasks in AssemblyScript (jobs/src/as) need node and npm; the compiler comes from npm (pinned).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
CC=${CC:-clang}
SYSROOT=${WASI_SYSROOT:-/usr}
# Flags shared by the wasm and native builds, so the two run the same code.
COMMON=(-O2 -std=c11 -Wall -Wextra -Werror -Wno-unused-function -ffp-contract=off -fno-ident)
WASM=(--target=wasm32-wasi "--sysroot=$SYSROOT" -mcpu=generic -Wl,--strip-all -Wl,-z,stack-size=1048576)
check=0
[ "${1:-}" = "--check" ] && check=1
out=wasm
if [ $check = 1 ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out" build/native
status=0
for src in src/*.c; do
  name=$(basename "$src" .c)
  "$CC" "${WASM[@]}" "${COMMON[@]}" -o "$out/$name.wasm" "$src" -lm
  if [ $check = 1 ]; then
    if ! cmp -s "$out/$name.wasm" "wasm/$name.wasm"; then
      echo "jobs/wasm/$name.wasm differs from a rebuild of jobs/src/$name.c: run jobs/build.sh and commit" >&2
      status=1
    fi
  else
    "$CC" "${COMMON[@]}" -o "build/native/$name" "$src" -lm
  fi
done
# Tasks in Zig: every jobs/src/zig/NAME.zig but the helper, shoal_task.zig.
ZIG_VERSION=0.17.1
if [ -z "${ZIG:-}" ]; then
  if command -v zig >/dev/null; then ZIG=zig
  elif python3 -c 'import ziglang' 2>/dev/null; then ZIG="python3 -m ziglang"
  fi
fi
if [ -z "${ZIG:-}" ]; then
  echo "SKIPPED: the Zig tasks (jobs/src/zig): no zig (pip install ziglang==$ZIG_VERSION, or set ZIG)" >&2
else
  have=$($ZIG version)
  if [ "$have" != "$ZIG_VERSION" ]; then
    echo "the Zig tasks need Zig $ZIG_VERSION (the committed .wasm were built with it); $ZIG is $have" >&2
    exit 1
  fi
  for src in src/zig/*.zig; do
    name=$(basename "$src" .zig)
    [ "$name" = shoal_task ] && continue
    (cd src/zig && $ZIG build-exe "$name.zig" -target wasm32-wasi -O ReleaseSmall -fstrip \
      -femit-bin="$( [ "${out#/}" != "$out" ] && echo "$out" || echo "$here/$out")/$name.wasm")
    rm -f "$out/$name.wasm.o"
    if [ $check = 1 ] && ! cmp -s "$out/$name.wasm" "wasm/$name.wasm"; then
      echo "jobs/wasm/$name.wasm differs from a rebuild of jobs/src/zig/$name.zig: run jobs/build.sh and commit" >&2
      status=1
    fi
  done
fi
# Tasks in AssemblyScript: every jobs/src/as/NAME.ts but the helper, shoal_task.ts, with the
# compiler and WASI shim pinned in jobs/src/as/package-lock.json (installed by `npm ci`).
if ! command -v npm >/dev/null; then
  echo "SKIPPED: the AssemblyScript tasks (jobs/src/as): no npm (Debian: apt install npm)" >&2
else
  if [ ! -x src/as/node_modules/.bin/asc ]; then
    (cd src/as && npm ci --silent --no-audit --no-fund)
  fi
  for src in src/as/*.ts; do
    name=$(basename "$src" .ts)
    [ "$name" = shoal_task ] && continue
    src/as/node_modules/.bin/asc "$src" --config src/as/node_modules/@assemblyscript/wasi-shim/asconfig.json \
      -O3 --noAssert --runtime stub -o "$out/$name.wasm"
    if [ $check = 1 ] && ! cmp -s "$out/$name.wasm" "wasm/$name.wasm"; then
      echo "jobs/wasm/$name.wasm differs from a rebuild of jobs/src/as/$name.ts: run jobs/build.sh and commit" >&2
      status=1
    fi
  done
fi
if [ $check = 1 ]; then
  for w in wasm/*.wasm; do
    name=$(basename "$w" .wasm)
    [ -f "src/$name.c" ] || [ -f "src/zig/$name.zig" ] || [ -f "src/as/$name.ts" ] \
      || { echo "$w has no source in jobs/src" >&2; status=1; }
  done
  [ $status = 0 ] && echo "jobs/wasm: every .wasm matches its rebuild"
fi
exit $status
