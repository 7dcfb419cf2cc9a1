#!/bin/sh
# Creates the role the daemon runs as (read and write its own tables and draw ids from their
# sequences; DELETE only where migration 0006 grants it: history rows it replaces and the
# gap repair's queue; no DDL) and a read-only role for Grafana. Migrations run as the owner
# ($POSTGRES_USER); the default privileges below hand every table and sequence a later
# migration creates to the two roles as it is created.
#
# The postgres image runs it once, when the volume is new (docker-entrypoint-initdb.d). It is
# safe to run again: on a volume made by an older version it creates what is missing and
# grants what the objects already there need:
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/10-roles.sh
set -eu
# psql variables (:"name" and :'value') quote names and passwords whatever they contain.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" \
  -v app="$INGESTOR_DB_USER" -v app_pw="$INGESTOR_DB_PASSWORD" \
  -v reader="$GRAFANA_DB_USER" -v reader_pw="$GRAFANA_DB_PASSWORD" <<'SQL'
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') AS make_app,
       NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader') AS make_reader \gset
\if :make_app
CREATE ROLE :"app" LOGIN PASSWORD :'app_pw';
\endif
\if :make_reader
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_pw';
\endif
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app";
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"app", :"reader";
-- What later migrations create (they run as the owner).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE ON TABLES TO :"app";
-- USAGE is nextval(): the fixture status history's ids come from a sequence default (identity
-- columns, such as settlement codes and group numbers, need no grant of their own).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT USAGE ON SEQUENCES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT ON TABLES TO :"reader";
-- What exists already (nothing on a new volume; everything on an older one).
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO :"app";
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO :"app";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
-- The three tables the daemon deletes from (on a volume migrated to 0006 or later; on a new
-- volume migration 0006 grants it when it creates them).
SELECT count(*) = 3 AS has_0006 FROM pg_tables
WHERE schemaname = 'public' AND tablename IN ('odds_changes', 'change_events', 'stream_gap_odds') \gset
\if :has_0006
GRANT DELETE ON odds_changes, change_events, stream_gap_odds TO :"app";
\endif
SQL
