#!/bin/sh
# Runs once, when the PostgreSQL volume is new (docker-entrypoint-initdb.d). Creates the role
# the daemon runs as (read and write its own tables, nothing else: no DELETE, no DDL) and a
# read-only role for Grafana. Migrations run as the owner ($POSTGRES_USER); the default
# privileges below hand the new tables to the two roles as they are created.
set -eu
# psql variables (:"name" and :'value') quote names and passwords whatever they contain.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" \
  -v app="$INGESTOR_DB_USER" -v app_pw="$INGESTOR_DB_PASSWORD" \
  -v reader="$GRAFANA_DB_USER" -v reader_pw="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE :"app" LOGIN PASSWORD :'app_pw';
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_pw';
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app";
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"app", :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT ON TABLES TO :"reader";
SQL
