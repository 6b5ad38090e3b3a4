#!/usr/bin/env bash
# Container health check of a service: GET /health/ready on the service's own
# port; exit 0 only on HTTP 200 (a 503 "not ready" or no answer is unhealthy).
#
# Installed in the runtime image as /usr/local/bin/healthcheck. It needs
# nothing but bash (its /dev/tcp), so the image carries no curl or wget.
#
# Usage: healthcheck [PATH]   (default /health/ready)
# The port is HEALTHCHECK_PORT, else the port of HTTP_ADDR (e.g. 0.0.0.0:8080).
set -uo pipefail

path="${1:-/health/ready}"
port="${HEALTHCHECK_PORT:-${HTTP_ADDR:-}}"
port="${port##*:}"
if [[ ! "$port" =~ ^[0-9]+$ ]]; then
    echo "healthcheck: no port (set HTTP_ADDR=host:port or HEALTHCHECK_PORT)" >&2
    exit 2
fi

if ! exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    echo "healthcheck: nothing listens on 127.0.0.1:$port" >&2
    exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
if ! IFS=' ' read -r -t 5 version status _ <&3; then
    echo "healthcheck: no answer from 127.0.0.1:$port$path within 5s" >&2
    exit 1
fi
exec 3<&-
if [[ "$status" == "200" ]]; then
    exit 0
fi
echo "healthcheck: GET $path answered ${version} ${status}" >&2
exit 1
