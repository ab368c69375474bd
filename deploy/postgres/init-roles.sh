#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory
# (/docker-entrypoint-initdb.d): creates the services' two logins with passwords, before any
# migration runs. Migration 0016 then finds them and grants them what they need; 0023 leaves
# their LOGIN and passwords as they are.
#   ventros_app        the request paths: bound by row-level security, history insert-only
#   ventros_projector  the work that spans tenants: bypasses row-level security
# The owner (POSTGRES_USER) only migrates, bootstraps and runs replay-tool.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_password="$VENTROS_APP_DB_PASSWORD" \
    -v projector_password="$VENTROS_PROJECTOR_DB_PASSWORD" <<'SQL'
create role ventros_app login password :'app_password';
create role ventros_projector login bypassrls password :'projector_password';
SQL
