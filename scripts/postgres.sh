#!/usr/bin/env bash
# A throw-away PostgreSQL server on loopback for the PostgreSQL backend (tests, benchmark, local use):
# Debian's PostgreSQL 15 (installed when absent), `initdb` into a temp dir, 127.0.0.1 on a free port,
# `log_statement = all` (the tests read the log to prove no binding password reaches it), and a
# non-superuser admin role with CREATEDB CREATEROLE + pg_signal_backend, as on RDS/Aurora.
#
#   scripts/postgres.sh run CMD [ARGS...]   start, export OSB_PG_* for CMD, run it, stop and clean up
#   scripts/postgres.sh serve [CONFIG_DIR]  start, write a broker config + catalog into CONFIG_DIR
#                                           (default .pg-local), wait until Ctrl-C, then clean up
#
# Exported to CMD: OSB_PG_HOST, OSB_PG_PORT, OSB_PG_ADMIN_USER, OSB_PG_ADMIN_PASSWORD, OSB_PG_LOG (the
# server log), OSB_PG_VERSION. Only loopback addresses are ever used.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
shift || true
case "$mode" in
  run) [ $# -gt 0 ] || { echo "usage: $0 run CMD [ARGS...]" >&2; exit 2; } ;;
  serve) ;;
  *) echo "usage: $0 run CMD [ARGS...] | $0 serve [CONFIG_DIR]" >&2; exit 2 ;;
esac

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PG_BIN/initdb" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL 15 is not installed ($PG_BIN/initdb missing); as root: apt-get install -y postgresql-15" >&2
    exit 1
  fi
  echo "==> installing PostgreSQL 15 (apt-get install -y postgresql-15)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi

# initdb refuses root: as root, the cluster belongs to the `postgres` user (created by the package).
as_owner() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
  as_owner() { runuser -u postgres -- "$@"; }
fi

dir=$(mktemp -d /tmp/osb-pg.XXXXXX)
chmod 0755 "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
admin_user=osb_admin
admin_password=$(random)

stop() {
  as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

# TLS: a throw-away CA and a server certificate for 127.0.0.1 (the tests connect with require and
# verify-full), and a second CA that signed nothing (verify-full with it must fail).
tls=$dir/tls
mkdir -p "$tls"
(
  cd "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=osb-test-ca 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=osb-other-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 \
    -extfile server.ext 2>/dev/null
  chmod 0600 server.key
)
[ "$(id -u)" -eq 0 ] && chown -R postgres "$tls"

as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
password_encryption = 'scram-sha-256'
log_statement = 'all'
logging_collector = off
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = '$tls/server.crt'
ssl_key_file = '$tls/server.key'
EOF
as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null

# The admin role: not a superuser. Its password is set with statement logging off for this session,
# so it never reaches the log the tests read.
PGOPTIONS="-c log_statement=none" as_owner psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres <<EOF
CREATE ROLE $admin_user LOGIN CREATEDB CREATEROLE PASSWORD '$admin_password';
GRANT pg_signal_backend TO $admin_user;
-- Bindings reach only their own database: nobody but the admin connects to the maintenance databases.
REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;
GRANT CONNECT ON DATABASE postgres TO $admin_user;
EOF

export OSB_PG_HOST=127.0.0.1
export OSB_PG_PORT=$port
export OSB_PG_ADMIN_USER=$admin_user
export OSB_PG_ADMIN_PASSWORD=$admin_password
export OSB_PG_LOG=$dir/server.log
export OSB_PG_CA_FILE=$tls/ca.crt
export OSB_PG_OTHER_CA_FILE=$tls/other-ca.crt
OSB_PG_VERSION=$(as_owner psql -X -At -h "$dir" -p "$port" -U postgres -d postgres -c 'SHOW server_version')
export OSB_PG_VERSION
echo "==> PostgreSQL $OSB_PG_VERSION on 127.0.0.1:$port (admin $admin_user, log $OSB_PG_LOG)"

if [ "$mode" = run ]; then
  "$@"
  exit $?
fi

# serve: a broker configuration serving the PostgreSQL catalog, for `cargo run -p osb-local -- --config`.
out=${1:-.pg-local}
mkdir -p "$out"
umask 077
printf '%s' "$admin_password" >"$out/pg-admin-password"
abs_out=$(cd "$out" && pwd)
sed -e "s/@PORT@/$port/" -e "s#@PASSWORD_FILE@#$abs_out/pg-admin-password#" \
  -e "s#^data_dir = .*#data_dir = \"$abs_out/data\"#" \
  docs/examples/postgresql.toml >"$out/broker.toml"
cp docs/examples/postgresql-catalog.json "$out/catalog.json"
echo "==> broker config in $out/broker.toml; run: cargo run --release -p osb-local -- --config $out/broker.toml"
echo "==> Ctrl-C stops the server and removes its data"
while true; do sleep 3600 & wait $!; done
