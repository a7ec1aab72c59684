#!/bin/sh
# Start or stop a private reference dockerd (Debian's docker.io, 20.10) used by
# compat-tests and `make bench`: its own socket, data root and exec root under
# DIR, no iptables, no bridge, so it never touches a system daemon.
#
#   scripts/ref-dockerd.sh start DIR   # prints the DOCKER_HOST to use
#   scripts/ref-dockerd.sh stop DIR
#
# Drive it with Debian's own CLI: DOCKER_HOST=$(...) /usr/bin/docker ...
# (DOCKER_BUILDKIT=1 for BuildKit, 0 for the legacy builder).
set -eu
cmd=${1:?usage: ref-dockerd.sh start|stop DIR}
dir=${2:?usage: ref-dockerd.sh start|stop DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sock="$dir/docker.sock"
case "$cmd" in
start)
    if [ -S "$sock" ] && DOCKER_HOST="unix://$sock" /usr/bin/docker version >/dev/null 2>&1; then
        echo "unix://$sock"; exit 0
    fi
    mkdir -p "$dir/data" "$dir/exec"
    # Short exec-root path: containerd socket paths must stay under 108 bytes.
    /usr/sbin/dockerd --iptables=false --ip-masq=false --bridge=none \
        -H "unix://$sock" --data-root "$dir/data" --exec-root "$dir/exec" \
        --pidfile "$dir/dockerd.pid" >"$dir/dockerd.log" 2>&1 &
    i=0
    until DOCKER_HOST="unix://$sock" /usr/bin/docker version >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 150 ]; then
            echo "ref-dockerd: dockerd did not start; see $dir/dockerd.log:" >&2
            tail -20 "$dir/dockerd.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "unix://$sock"
    ;;
stop)
    if [ -f "$dir/dockerd.pid" ]; then
        pid=$(cat "$dir/dockerd.pid")
        kill "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    ;;
*) echo "usage: ref-dockerd.sh start|stop DIR" >&2; exit 2 ;;
esac
