#!/bin/sh
# The container image's entrypoint: `shoal-entrypoint ARGS...` runs `shoal ARGS...` (exec: shoal
# becomes the container's main process and gets its SIGTERM), after turning bootstrap host names
# into addresses. `shoal worker --bootstrap` and `shoal submit --bootstrap` take IP addresses only,
# while containers find each other by name (a compose service, a Kubernetes headless Service).
#
#   SHOAL_BOOTSTRAP_DNS=bootstrap:7600 shoal-entrypoint worker     # SHOAL_BOOTSTRAP=172.18.0.2:7600
#   SHOAL_BOOTSTRAP_DNS=bootstrap:7600 shoal-entrypoint submit job.toml  # adds --bootstrap 172.18.0.2:7600
#
# Variables (none set: plain `exec shoal "$@"`):
#   SHOAL_BOOTSTRAP_DNS        HOST:PORT[,HOST:PORT...]; each HOST is resolved to its IPv4
#                              addresses (getent ahostsv4: /etc/hosts, then DNS).
#   SHOAL_OWN_IP               this container's address, left out of the result (a headless
#                              Service lists the asking pod too); default: what the container's
#                              host name resolves to.
#   SHOAL_BOOTSTRAP_DNS_WAIT   seconds to retry until at least one other address resolves
#                              (default 30; the names appear as the peers start).
#   SHOAL_BOOTSTRAP_DNS_ELSE   when none resolved in time: `fail` (default; exit 2) or
#                              `new-swarm` (start alone: the first peer of a swarm).
#   SHOAL_BOOTSTRAP_DNS_MAX    keep at most this many addresses, picked at random (default 3; one
#                              that answers is enough to join).
# For `worker` the addresses go into SHOAL_BOOTSTRAP (joined to any it already holds); for
# `submit` they become --bootstrap flags; other commands run unchanged.
set -euf

say() { printf 'shoal-entrypoint: %s\n' "$*" >&2; }

if [ -z "${SHOAL_BOOTSTRAP_DNS:-}" ]; then
  exec shoal "$@"
fi

wait_s=${SHOAL_BOOTSTRAP_DNS_WAIT:-30}
max=${SHOAL_BOOTSTRAP_DNS_MAX:-3}
otherwise=${SHOAL_BOOTSTRAP_DNS_ELSE:-fail}
case "$wait_s$max" in
  *[!0-9]*) say "SHOAL_BOOTSTRAP_DNS_WAIT and SHOAL_BOOTSTRAP_DNS_MAX must be whole numbers"; exit 2 ;;
esac
case "$otherwise" in
  fail | new-swarm) ;;
  *) say "SHOAL_BOOTSTRAP_DNS_ELSE must be \`fail\` or \`new-swarm\`, not \`$otherwise\`"; exit 2 ;;
esac

names=$(printf '%s\n' "$SHOAL_BOOTSTRAP_DNS" | tr ',' ' ')
for name in $names; do
  case "${name##*:}" in
    "$name" | "" | *[!0-9]*) say "\`$name\` in SHOAL_BOOTSTRAP_DNS is not HOST:PORT"; exit 2 ;;
  esac
done

own=${SHOAL_OWN_IP:-$(getent ahostsv4 "$(cat /proc/sys/kernel/hostname)" | awk '{ print $1 }' | sort -u | tr '\n' ' ')}

# One HOST:PORT per line for every name in SHOAL_BOOTSTRAP_DNS, less this container's own addresses.
resolve() {
  for name in $names; do
    getent ahostsv4 "${name%:*}" | awk '{ print $1 }' | sort -u | while read -r ip; do
      case " $own " in
        *" $ip "*) ;;
        *) printf '%s:%s\n' "$ip" "${name##*:}" ;;
      esac
    done
  done
}

deadline=$(($(date +%s) + wait_s))
while :; do
  found=$(resolve | sort -u | shuf -n "$max" | tr '\n' ' ')
  found=${found% }
  [ -z "$found" ] || break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    if [ "$otherwise" = new-swarm ]; then
      say "no peer at $SHOAL_BOOTSTRAP_DNS after ${wait_s}s: starting a new swarm"
      break
    fi
    say "no peer at $SHOAL_BOOTSTRAP_DNS after ${wait_s}s: it resolved to no address but this container's own; is the bootstrap peer's service running, and is the name right?"
    exit 2
  fi
  sleep 1
done

if [ -n "$found" ]; then
  say "bootstrap $SHOAL_BOOTSTRAP_DNS = $found"
  case "${1:-}" in
    worker)
      SHOAL_BOOTSTRAP=$(printf '%s %s' "${SHOAL_BOOTSTRAP:-}" "$found" | tr -s ' ' '\n' | sed '/^$/d' | paste -sd, -)
      export SHOAL_BOOTSTRAP
      ;;
    submit)
      for addr in $found; do
        set -- "$@" --bootstrap "$addr"
      done
      ;;
  esac
fi
exec shoal "$@"
