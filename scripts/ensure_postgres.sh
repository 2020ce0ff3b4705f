#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432; start the local cluster if it does not.
set -euo pipefail
ready() { pg_isready -h 127.0.0.1 -p 5432 -q; }
if ready; then echo "postgres: up"; exit 0; fi
echo "postgres: down, starting the local cluster"
pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
for _ in $(seq 1 30); do
  if ready; then echo "postgres: up"; exit 0; fi
  sleep 1
done
echo "postgres: still not answering on 127.0.0.1:5432" >&2
exit 1
