#!/usr/bin/env bash
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d):
# one role and one database per service, each service owning its data (ARCHITECTURE.md).
# The passwords come from the environment (AUTH_DB_PASSWORD, API_DB_PASSWORD; see
# .env.example) and travel as psql variables, never in this file or a command line.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v auth_password="${AUTH_DB_PASSWORD:?}" -v api_password="${API_DB_PASSWORD:?}" <<'SQL'
CREATE ROLE bulwark_auth LOGIN PASSWORD :'auth_password';
CREATE DATABASE bulwark_auth OWNER bulwark_auth;
REVOKE ALL ON DATABASE bulwark_auth FROM PUBLIC;
CREATE ROLE bulwark_api LOGIN PASSWORD :'api_password';
CREATE DATABASE bulwark_api OWNER bulwark_api;
REVOKE ALL ON DATABASE bulwark_api FROM PUBLIC;
SQL
