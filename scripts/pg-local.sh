#!/usr/bin/env bash
# Two local PostgreSQL clusters for trying shadan by hand, like the test harness starts:
# "source" (the grid company's joint database) and "target" (the retail database).
#
#   scripts/pg-local.sh start   # start both (initdb on first use), load schema/ into empty DBs
#   eval "$(scripts/pg-local.sh env)"   # export SHADAN_SOURCE / SHADAN_TARGET
#   scripts/pg-local.sh stop    # stop both and remove their directory
#
# SHADAN_LOCAL_DIR (default ./.shadan-local), SHADAN_SOURCE_PORT (55431) and
# SHADAN_TARGET_PORT (55432) change where they live.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${SHADAN_LOCAL_DIR:-$root/.shadan-local}
source_port=${SHADAN_SOURCE_PORT:-55431}
target_port=${SHADAN_TARGET_PORT:-55432}
bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# As root the servers run as the postgres user, which cannot enter a checkout under a
# 0700 directory such as /root: their data, sockets and logs then live in a directory of
# their own under /var/tmp, named after $dir so that `stop` finds and removes it.
pgdir=$dir
if [ "$(id -u)" = 0 ]; then
    probe=$dir
    while [ ! -e "$probe" ]; do probe=$(dirname "$probe"); done
    if ! runuser -u postgres -- test -x "$probe" 2>/dev/null; then
        pgdir=/var/tmp/shadan-local-$(printf '%s' "$dir" | md5sum | cut -c1-16)
    fi
fi

start_one() { # name port database schema-file
    local name=$1 port=$2 db=$3 schema=$4 data="$pgdir/$1"
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        [ "$(id -u)" = 0 ] && chown postgres: "$pgdir" "$data"
        as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust --no-locale -E UTF8 >/dev/null
    fi
    if ! as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_postgres "$bin/pg_ctl" -D "$data" -l "$pgdir/$name.log" -w start \
            -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c max_connections=200" >/dev/null
    fi
    local url="postgres://postgres@127.0.0.1:$port"
    if ! "$bin/psql" -X -qAt -d "$url/postgres" -c "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
        "$bin/psql" -X -q -d "$url/postgres" -c "CREATE DATABASE $db"
        "$bin/psql" -X -q -v ON_ERROR_STOP=1 -d "$url/$db" -f "$root/schema/$schema"
    fi
    echo "$name cluster: $url/$db (log $pgdir/$name.log)"
}

case ${1:-} in
start)
    [ -x "$bin/initdb" ] || { echo "no PostgreSQL server found; install the postgresql package" >&2; exit 1; }
    mkdir -p "$dir"
    start_one source "$source_port" joint joint.sql
    start_one target "$target_port" retail retail.sql
    ;;
stop)
    for name in source target; do
        [ -f "$pgdir/$name/PG_VERSION" ] && as_postgres "$bin/pg_ctl" -D "$pgdir/$name" -m fast stop >/dev/null 2>&1 || true
    done
    rm -rf "$dir" "$pgdir"
    if [ "$pgdir" = "$dir" ]; then echo "stopped and removed $dir"; else echo "stopped and removed $dir and $pgdir"; fi
    ;;
env)
    echo "export SHADAN_SOURCE=postgres://postgres@127.0.0.1:$source_port/joint"
    echo "export SHADAN_TARGET=postgres://postgres@127.0.0.1:$target_port/retail"
    ;;
*)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
