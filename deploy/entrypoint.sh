#!/bin/sh
# Container entry point (run by tini): make Warden's directories, then run the command (the server),
# which finds its cgroups itself and refuses to start, saying why, when it cannot limit executions.
set -eu
mkdir -p "${RUN_DIR:-/run/warden}" "${DATA_DIR:-/data}"
exec "$@"
