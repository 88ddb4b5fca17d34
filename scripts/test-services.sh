#!/usr/bin/env bash
# Make sure everything the test suite talks to exists and runs, then write .test-env.
#
#   PostgreSQL: TEST_DATABASE_URL when given; else the server on 127.0.0.1:5432; else start
#   the machine's cluster (pg_ctlcluster); else initialise a private one for the tests.
#   prometheus, promtool, prometheus-alertmanager, amtool, chromium (the status page's
#   browser tests): Debian packages, installed when missing and root or sudo is available.
#
# Under CI=true anything still missing is an error: a skipped component is a failed run.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test-services: %s\n' "$*" >&2; }
ci() { [ "${CI:-}" = "true" ]; }
sudo_cmd() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}

packages=()
command -v pg_ctlcluster >/dev/null || command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
command -v psql >/dev/null || packages+=(postgresql-client)
command -v prometheus >/dev/null || packages+=(prometheus)
command -v promtool >/dev/null || packages+=(prometheus)
command -v prometheus-alertmanager >/dev/null || packages+=(prometheus-alertmanager)
command -v amtool >/dev/null || packages+=(prometheus-alertmanager)
command -v chromium >/dev/null || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ]; then
  wanted=$(printf '%s\n' "${packages[@]}" | sort -u | tr '\n' ' ')
  say "installing: $wanted"
  if sudo_cmd apt-get update -qq && sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $wanted >/dev/null; then
    say "installed $wanted"
  else
    say "could not install $wanted (no root or sudo, or no package source)"
  fi
fi
missing=()
for binary in psql prometheus promtool prometheus-alertmanager amtool chromium; do
  command -v "$binary" >/dev/null || missing+=("$binary")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ci; then say "missing under CI: ${missing[*]}"; exit 1; fi
  say "missing: ${missing[*]} (the tests that need them will be skipped)"
fi

pg_ready() { pg_isready -q -d "$1" 2>/dev/null || psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

url=${TEST_DATABASE_URL:-}
if [ -z "$url" ]; then
  url="postgresql://postgres@127.0.0.1:5432/postgres"
  if ! pg_ready "$url"; then
    if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1; then
      version=$(ls /etc/postgresql | sort -V | tail -n 1)
      say "starting PostgreSQL $version (pg_ctlcluster)"
      sudo_cmd pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
  fi
  if ! pg_ready "$url"; then
    # A private throwaway cluster, as the postgres user when we are root (initdb refuses root).
    bindir=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)")
    data=${TMPDIR:-/tmp}/accounting-sync-test-pg
    port=55432
    run=(); [ "$(id -u)" -eq 0 ] && run=(runuser -u postgres --)
    if [ -x "$bindir/initdb" ]; then
      if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"; [ "$(id -u)" -eq 0 ] && chown postgres "$data"
        "${run[@]}" "$bindir/initdb" -D "$data" -U postgres -A trust >/dev/null
      fi
      say "starting a private PostgreSQL on 127.0.0.1:$port"
      "${run[@]}" "$bindir/pg_ctl" -D "$data" -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" -l "$data/log" -w start >/dev/null || true
      url="postgresql://postgres@127.0.0.1:$port/postgres"
    fi
  fi
fi
if ! pg_ready "$url"; then
  if ci; then say "PostgreSQL is not reachable at $url"; exit 1; fi
  say "PostgreSQL is not reachable at $url (the tests that need it will be skipped)"
fi
printf 'export TEST_DATABASE_URL=%q\n' "$url" > .test-env
say "PostgreSQL: $url"
