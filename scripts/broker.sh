#!/usr/bin/env bash
# Installs, starts and stops the Kafka-compatible broker used by the integration tests.
#
#   scripts/broker.sh install   build tansu 0.6.0 (features dynostore,libsql) into the cache
#   scripts/broker.sh up        install if needed, start on 127.0.0.1:9092 with sqlite storage, wait
#   scripts/broker.sh down      stop it
#   scripts/broker.sh fresh     stop it, delete its sqlite database, start it again
#
# The binary is cached outside target/ (LISTING_GUARD_CACHE, default ~/.cache/listing-guard), so
# `cargo clean` or a fresh clone does not rebuild it. The version is checked before reuse.
set -euo pipefail

TANSU_VERSION=0.6.0
CACHE="${LISTING_GUARD_CACHE:-$HOME/.cache/listing-guard}"
ROOT="$CACHE/tansu-$TANSU_VERSION"
BIN="$ROOT/bin/tansu"
STATE="${BROKER_STATE_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/broker}"
ADDR="${BROKER_ADDR:-127.0.0.1:9092}"
HOST="${ADDR%:*}"
PORT="${ADDR##*:}"

installed_ok() {
  [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"
}

install() {
  if installed_ok; then
    echo "broker: tansu $TANSU_VERSION already installed at $BIN"
    return
  fi
  echo "broker: building tansu $TANSU_VERSION (first time only, about 10-15 minutes on 2 cores)"
  mkdir -p "$ROOT"
  cargo install tansu@"$TANSU_VERSION" --locked --features dynostore,libsql --root "$ROOT"
}

port_open() {
  (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null && exec 3>&- 3<&-
}

up() {
  install
  if port_open; then
    echo "broker: something already listens on $ADDR; using it"
    return
  fi
  mkdir -p "$STATE"
  # sqlite:// paths are relative to the working directory. The subshell execs the broker, so
  # $! is the broker's own pid (not a shell's) and `down` stops the broker itself.
  (cd "$STATE" && exec nohup "$BIN" broker \
      --listener-url "tcp://$ADDR" \
      --advertised-listener-url "tcp://$ADDR" \
      --storage-engine "sqlite://tansu.db" >"$STATE/broker.log" 2>&1) &
  echo $! >"$STATE/broker.pid"
  for _ in $(seq 1 100); do
    if port_open; then
      echo "broker: tansu $TANSU_VERSION up on $ADDR (pid $(cat "$STATE/broker.pid"), log $STATE/broker.log)"
      return
    fi
    sleep 0.2
  done
  echo "broker: did not start; log follows" >&2
  cat "$STATE/broker.log" >&2 || true
  exit 1
}

down() {
  if [ -f "$STATE/broker.pid" ]; then
    pid=$(cat "$STATE/broker.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$STATE/broker.pid"
    echo "broker: stopped"
  elif pkill -f "tansu broker --listener-url tcp://$ADDR" 2>/dev/null; then
    # A busy broker can take a while to honour SIGTERM; never leave it holding the port.
    for _ in $(seq 1 50); do pgrep -f "tansu broker --listener-url tcp://$ADDR" >/dev/null || break; sleep 0.1; done
    pkill -9 -f "tansu broker --listener-url tcp://$ADDR" 2>/dev/null || true
    echo "broker: stopped (found by command line)"
  else
    echo "broker: not running"
  fi
}

# tansu's sqlite database slows the broker as it grows: on a slow 2-core machine the later
# integration tests timed out behind the earlier ones' data. `make test` starts each test
# binary on a fresh database.
fresh() {
  down
  rm -f "$STATE"/tansu.db*
  up
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  fresh) fresh ;;
  *) echo "usage: $0 install|up|down|fresh" >&2; exit 2 ;;
esac
