#!/bin/sh
# Container entry point (run by tini): make Warden's directories, then run the command (the server) in a
# writable view of this container's own cgroups, which Docker mounts read-only without --privileged
# (deploy/private-cgroups.py; where the tree is writable already, the command runs as is). The server
# finds its cgroups itself and refuses to start, saying why, when it cannot limit executions.
set -eu
mkdir -p "${RUN_DIR:-/run/warden}" "${DATA_DIR:-/data}"
exec python3 -I "$(dirname "$0")/private-cgroups.py" "$@"
