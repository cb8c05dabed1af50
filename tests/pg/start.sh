#!/usr/bin/env bash
# Starts the PostgreSQL the tests use and prints the URL they connect with (the last line of
# stdout). Installs Debian's postgresql when it is missing. Idempotent: a running cluster is
# left running. The tests make a fresh database per test on it, and start private servers of
# their own (initdb) from the same installation where they stop the database on purpose.
set -euo pipefail

PASSWORD=vllm-batch-test
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

if ! command -v pg_lsclusters >/dev/null; then
    echo "installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >&2
fi
if [ -z "$(pg_lsclusters -h)" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    echo "creating cluster $version/main" >&2
    pg_createcluster "$version" main >&2
fi
read -r version cluster port status _ < <(pg_lsclusters -h | head -1)
if [ "$status" != online ]; then
    echo "starting PostgreSQL $version/$cluster" >&2
    pg_ctlcluster "$version" "$cluster" start >&2
fi
for _ in $(seq 1 60); do
    pg_isready -q -h /var/run/postgresql -p "$port" && break
    sleep 0.5
done
pg_isready -h /var/run/postgresql -p "$port" >&2
# Password login over TCP: what a deployment uses, and it needs no change to pg_hba.conf.
as_postgres psql -q -h /var/run/postgresql -p "$port" -c "ALTER USER postgres PASSWORD '$PASSWORD'" >&2
# Databases the tests made on earlier runs (one per test data folder) are dropped.
as_postgres psql -q -At -h /var/run/postgresql -p "$port" \
    -c "SELECT datname FROM pg_database WHERE datname LIKE 'vbt\_%'" |
    while read -r db; do as_postgres psql -q -h /var/run/postgresql -p "$port" -c "DROP DATABASE \"$db\"" >&2; done
echo "postgres://postgres:$PASSWORD@127.0.0.1:$port"
