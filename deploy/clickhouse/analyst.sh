#!/bin/bash
# The read-only login for SQL analysts on modern ClickHouse (24.8 in
# docker-compose.yml): user "analyst" with the settings profile
# analyst_profile (readonly = 1 and the limits below), the hourly quota
# analyst_quota, and the role analyst_role, which may SELECT from the
# clickagg database only. The local 18.16 servers get the same login from
# services/ (users.xml); the limits are services/analyst.go's, and
# deploy/compose_test.go runs this script against a stand-in client and
# compares them.
#
# docker-compose.yml mounts it into /docker-entrypoint-initdb.d/, so the
# image's entrypoint runs it (or sources it, when it is not executable) on
# the first start of an empty data volume, against the server it starts on
# 127.0.0.1, before the ports open. It can be run again at any time to
# apply a new password or new limits (every statement is idempotent):
#
#   docker compose exec clickhouse bash /docker-entrypoint-initdb.d/analyst.sh
#
# The password: CLICKAGG_ANALYST_PASSWORD, else the one kept in
# CLICKAGG_ANALYST_PASSWORD_FILE (default /var/lib/clickhouse/analyst_password,
# in the data volume), else a new random one, which is then kept there:
#
#   docker compose exec clickhouse cat /var/lib/clickhouse/analyst_password
#
# The server stores only its SHA-256. The script connects as CLICKHOUSE_USER
# with CLICKHOUSE_PASSWORD, the user the entrypoint creates with access
# management.

set -eo pipefail

clickagg_db="${CLICKHOUSE_DB:-clickagg}"
if ! [[ "$clickagg_db" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "analyst.sh: CLICKHOUSE_DB '$clickagg_db' is not a plain identifier" >&2
    exit 1
fi

# The limits: services/analyst.go (AnalystProfile, AnalystQuota) holds the
# same values, and deploy/compose_test.go fails when they differ.
clickagg_profile="readonly = 1, max_execution_time = 60, max_memory_usage = 2147483648, max_rows_to_read = 2000000000, max_result_rows = 1000000, result_overflow_mode = 'throw', max_concurrent_queries_for_user = 4, max_memory_usage_for_user = 4294967296"
clickagg_quota="FOR INTERVAL 1 hour MAX queries = 1000, errors = 100, read_rows = 20000000000, execution_time = 1800"

clickagg_password_file="${CLICKAGG_ANALYST_PASSWORD_FILE:-/var/lib/clickhouse/analyst_password}"
clickagg_password="${CLICKAGG_ANALYST_PASSWORD:-}"
if [ -z "$clickagg_password" ] && [ -s "$clickagg_password_file" ]; then
    clickagg_password="$(cat "$clickagg_password_file")"
fi
if [ -z "$clickagg_password" ]; then
    clickagg_password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
fi
if [ "$(cat "$clickagg_password_file" 2>/dev/null)" != "$clickagg_password" ]; then
    (umask 077 && printf '%s\n' "$clickagg_password" >"$clickagg_password_file")
fi
clickagg_hash="$(printf '%s' "$clickagg_password" | sha256sum | cut -d' ' -f1)"

# IF NOT EXISTS, then ALTER: re-running updates the entities in place, so
# the references between them (user -> profile, quota -> user) stay valid.
clickhouse-client --host 127.0.0.1 --user "${CLICKHOUSE_USER:-default}" --password "${CLICKHOUSE_PASSWORD:-}" --multiquery <<SQL
CREATE ROLE IF NOT EXISTS analyst_role;
GRANT SELECT ON ${clickagg_db}.* TO analyst_role;
CREATE SETTINGS PROFILE IF NOT EXISTS analyst_profile;
ALTER SETTINGS PROFILE analyst_profile SETTINGS ${clickagg_profile};
CREATE USER IF NOT EXISTS analyst IDENTIFIED WITH sha256_hash BY '${clickagg_hash}';
ALTER USER analyst IDENTIFIED WITH sha256_hash BY '${clickagg_hash}' HOST ANY DEFAULT DATABASE ${clickagg_db} SETTINGS PROFILE 'analyst_profile';
GRANT analyst_role TO analyst;
ALTER USER analyst DEFAULT ROLE analyst_role;
CREATE QUOTA IF NOT EXISTS analyst_quota;
ALTER QUOTA analyst_quota KEYED BY user_name ${clickagg_quota} TO analyst;
SQL
echo "analyst.sh: user analyst ready (database ${clickagg_db}; password in ${clickagg_password_file})"
