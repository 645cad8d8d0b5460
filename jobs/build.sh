#!/usr/bin/env bash
# Rebuilds every task program in jobs/src into jobs/wasm/NAME.wasm (committed), and native
# executables of the same sources into jobs/build/native/NAME (for benchmarks; not committed).
#
#   jobs/build.sh            rebuild the .wasm and the native executables
#   jobs/build.sh --check    rebuild into a temporary folder and fail if any committed .wasm differs
#
# Needs Debian's clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (CI installs them).
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
if [ $check = 1 ]; then
  for w in wasm/*.wasm; do
    [ -f "src/$(basename "$w" .wasm).c" ] || { echo "$w has no source in jobs/src" >&2; status=1; }
  done
  [ $status = 0 ] && echo "jobs/wasm: every .wasm matches its rebuild"
fi
exit $status
