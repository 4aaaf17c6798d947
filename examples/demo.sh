#!/usr/bin/env bash
# The mispd demo: build, start the daemon on the real MISP feed bundled in examples/feed/ (no
# network, no MISP server), wait until it serves, look a few values up, show status and
# quarantine, then stop it. Everything it writes goes to a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building mispd and mispctl (release; the first build takes a few minutes)"
cargo build --release --quiet --bins
bin=${CARGO_TARGET_DIR:-target}/release
dir=$(mktemp -d /tmp/mispd-demo.XXXXXX)
export MISPD_DAEMON__STATE_DIR="$dir/state"
export MISPD_DAEMON__CREDENTIALS_DIR="$dir/credentials"
export MISPD_QUERY__SOCKET="$dir/query.sock"
export MISPCTL_SOCKET="$dir/query.sock"

"$bin/mispd" --config examples/demo.toml 2>"$dir/mispd.log" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

echo "== waiting for mispd to sync the bundled feed"
for _ in $(seq 1 120); do
  if "$bin/mispctl" status --json 2>/dev/null | grep -q '"state":"ok"'; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "mispd exited:"; cat "$dir/mispd.log"; exit 1; fi
  sleep 0.5
done

echo; echo "== mispctl status"
"$bin/mispctl" status

echo; echo "== mispctl lookup (listed: exact, subdomain, IP, a URL the feed listed defanged (hxxp), asked refanged, hash, email; not listed: benign)"
"$bin/mispctl" lookup wordpress.agrupem.com cdn.claudfront.net 62.171.178.147 \
  'http://103.167.92.57/xx_cloudprotect/vbc.exe' \
  4996180b2fa1045aab5d36f46983e91dadeebfd4f765d69fa50eba4edf310acf \
  amazingdeals@dripwatt.co google.com 8.8.8.8 || true

if command -v curl >/dev/null; then
  echo; echo "== the same over plain HTTP: curl --unix-socket $MISPD_QUERY__SOCKET 'http://localhost/v1/lookup?value=62.171.178.147'"
  curl -s --unix-socket "$MISPD_QUERY__SOCKET" 'http://localhost/v1/lookup?value=62.171.178.147'; echo
fi

echo; echo "== mispctl quarantine --limit 10 (what validation held back, and why)"
"$bin/mispctl" quarantine --limit 10

echo; echo "== daemon log"
cat "$dir/mispd.log"
