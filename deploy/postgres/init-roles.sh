#!/bin/sh
# Runs once, when the PostgreSQL volume is new (docker-entrypoint-initdb.d). Creates the role
# the daemon runs as (read and write its own tables, nothing else: no DELETE, no DDL) and a
# read-only role for Grafana. Migrations run as the owner ($POSTGRES_USER); the default
# privileges below hand the new tables to the two roles as they are created.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE "${INGESTOR_DB_USER}" LOGIN PASSWORD '${INGESTOR_DB_PASSWORD}';
CREATE ROLE "${GRAFANA_DB_USER}" LOGIN PASSWORD '${GRAFANA_DB_PASSWORD}';
GRANT CONNECT, TEMPORARY ON DATABASE "${POSTGRES_DB}" TO "${INGESTOR_DB_USER}";
GRANT CONNECT ON DATABASE "${POSTGRES_DB}" TO "${GRAFANA_DB_USER}";
GRANT USAGE ON SCHEMA public TO "${INGESTOR_DB_USER}", "${GRAFANA_DB_USER}";
ALTER DEFAULT PRIVILEGES FOR ROLE "${POSTGRES_USER}" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE ON TABLES TO "${INGESTOR_DB_USER}";
ALTER DEFAULT PRIVILEGES FOR ROLE "${POSTGRES_USER}" IN SCHEMA public
    GRANT SELECT ON TABLES TO "${GRAFANA_DB_USER}";
SQL
