#!/usr/bin/env bash
# Run once by the postgres image's entrypoint, on an empty data directory
# (/docker-entrypoint-initdb.d): one role and one database per service, the
# role owning its database, and nobody else allowed to connect to it.
#
# Owning the database is what lets a service apply its own migrations (the
# `public` schema belongs to `pg_database_owner` since PostgreSQL 15), and the
# REVOKE keeps one service out of another's data. REPLICATION lets the
# log-tailing outbox relay create its slot and stream its own database's log
# (a logical replication connection is still bound to the database it names). Passwords come from
# <SERVICE>_DB_PASSWORD (set by docker-compose.yml), defaulting to the
# service's name for a local stack.
#
# Changing this file does nothing to an existing volume: `docker-compose down -v`
# (which deletes the data) makes it run again.
set -euo pipefail

services=(order stock payment shipping email loyalty console)

for service in "${services[@]}"; do
    password_var="${service^^}_DB_PASSWORD"
    password="${!password_var:-$service}"
    # psql variables (:"name" quotes an identifier, :'pass' a literal), so a
    # keyword such as `order` or a quote in a password cannot break the SQL.
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
        -v name="$service" -v pass="$password" <<'SQL'
CREATE ROLE :"name" LOGIN REPLICATION PASSWORD :'pass';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
    echo "created role and database \"$service\""
done
