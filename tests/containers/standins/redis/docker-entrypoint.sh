#!/usr/bin/env bash
# As the official image: redis-server runs as the redis user, on every address, protected
# mode off (a password is what protects it in docker-compose.yml).
set -euo pipefail
if [[ ${1:-} == redis-server ]]; then
  shift
  set -- redis-server --bind '* -::*' --protected-mode no "$@"
  if [[ $(id -u) == 0 ]]; then
    chown -R redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
