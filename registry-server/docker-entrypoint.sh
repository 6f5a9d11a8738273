#!/bin/sh
# Entrypoint of the modelpack-registry container image (see registry-server/Containerfile
# and docs/deployment.md).
#
#   docker-entrypoint.sh [serve] [EXTRA SERVE OPTIONS...]   serve (the default command)
#   docker-entrypoint.sh verify | reindex                    maintenance on the data folder
#                                      (verify checks the htpasswd secret too, if mounted)
#   docker-entrypoint.sh healthcheck                         exit 0 if GET /health answers 200
#   docker-entrypoint.sh COMMAND [ARGS...]                   run anything else (e.g. sh)
#
# Configuration, all optional (defaults are what the image and deploy/ use):
#   MODELPACK_DATA             data folder                       /data
#   MODELPACK_STORAGE          s3://BUCKET/PREFIX: the state in a bucket instead of the
#                              data folder (read by `modelpack-registry` itself, as are
#                              MODELPACK_S3_ENDPOINT, MODELPACK_S3_REGION and
#                              MODELPACK_S3_REDIRECT); --storage in the arguments too
#   MODELPACK_HTPASSWD         htpasswd file (a mounted secret)  /run/secrets/htpasswd
#   MODELPACK_HOST             address to listen on              0.0.0.0
#   MODELPACK_PORT             port                              8080
#   MODELPACK_WORKERS          gunicorn worker processes         1
#   MODELPACK_THREADS          threads per worker                16
#   MODELPACK_MAX_UPLOAD_SIZE  largest upload body               20GiB
#   MODELPACK_ADMINS           users who may change every model, space-separated   (none)
#   MODELPACK_PROTECT_READS    "1": every read needs credentials too (not /health)
#   MODELPACK_GRACEFUL_TIMEOUT seconds a stopping pod lets uploads finish         30
#   MODELPACK_ACCESS_LOG       "1": one line per request on stdout (never a secret)
#   MODELPACK_UPSTREAM         a simple index to proxy for non-private names (read by
#                              `modelpack-registry serve` itself; MODELPACK_UPSTREAM_TTL too)
#   MODELPACK_HEADER_TIMEOUT   --header-timeout SECONDS   (the server's default, 20)
#   MODELPACK_BODY_TIMEOUT     --body-timeout SECONDS     (60)
#   MODELPACK_MIN_UPLOAD_RATE  --min-upload-rate SIZE     (10KiB)
#   MODELPACK_MAX_CONNECTIONS  --max-connections N, per worker (4096)
#   MODELPACK_INSECURE         "1": serve WITHOUT credentials when the htpasswd file is
#                              missing (anonymous uploads; trusted networks only)
#   SCRIPT_NAME                a path prefix such as /models: gunicorn then serves every
#                              path under it only (the healthcheck asks $SCRIPT_NAME/health)
#
# The server refuses anonymous uploads on a non-loopback address. This script never
# falls back to --insecure by itself: a missing, unreadable or empty htpasswd secret
# stops the container with a message and exit status 1, unless MODELPACK_INSECURE=1.
set -eu

DATA=${MODELPACK_DATA:-/data}
HTPASSWD=${MODELPACK_HTPASSWD:-/run/secrets/htpasswd}
HOST=${MODELPACK_HOST:-0.0.0.0}
PORT=${MODELPACK_PORT:-8080}
REGISTRY=${MODELPACK_REGISTRY_BIN:-modelpack-registry}

fail() {
    echo "modelpack-registry container: error: $*" >&2
    exit 1
}

has_users() {
    # at least one "user:hash" line that is not a comment
    grep -Eq '^[[:space:]]*[^#[:space:]][^:]*:.' "$1"
}

# `--data DIR` for the commands, unless the state is in a bucket (--storage among the
# arguments, or MODELPACK_STORAGE): the server refuses both at once.
where() {
    case " $* " in *" --storage "* | *" --storage="*) return ;; esac
    [ -n "${MODELPACK_STORAGE:-}" ] || echo "$DATA"
}

serve() {
    data=$(where "$@")
    set -- --host "$HOST" --port "$PORT" \
        --workers "${MODELPACK_WORKERS:-1}" --threads "${MODELPACK_THREADS:-16}" \
        --max-upload-size "${MODELPACK_MAX_UPLOAD_SIZE:-20GiB}" \
        --graceful-timeout "${MODELPACK_GRACEFUL_TIMEOUT:-30}" "$@"
    for admin in ${MODELPACK_ADMINS:-}; do
        set -- "$@" --admin "$admin"
    done
    if [ "${MODELPACK_PROTECT_READS:-}" = "1" ]; then
        set -- "$@" --protect-reads
    fi
    if [ "${MODELPACK_ACCESS_LOG:-}" = "1" ]; then
        set -- "$@" --access-log
    fi
    # slow-client limits: passed only when set, so the server's defaults apply otherwise
    [ -n "${MODELPACK_HEADER_TIMEOUT:-}" ] && set -- "$@" --header-timeout "$MODELPACK_HEADER_TIMEOUT"
    [ -n "${MODELPACK_BODY_TIMEOUT:-}" ] && set -- "$@" --body-timeout "$MODELPACK_BODY_TIMEOUT"
    [ -n "${MODELPACK_MIN_UPLOAD_RATE:-}" ] && set -- "$@" --min-upload-rate "$MODELPACK_MIN_UPLOAD_RATE"
    [ -n "${MODELPACK_MAX_CONNECTIONS:-}" ] && set -- "$@" --max-connections "$MODELPACK_MAX_CONNECTIONS"
    if [ -f "$HTPASSWD" ]; then
        [ -r "$HTPASSWD" ] || fail "cannot read the htpasswd secret $HTPASSWD" \
            "(running as uid $(id -u)); make it readable by this user (Kubernetes:" \
            "defaultMode 0440 and fsGroup, or 0444)"
        has_users "$HTPASSWD" || fail "the htpasswd secret $HTPASSWD has no 'user:hash'" \
            "line; write it with \`htpasswd -nB USER\` (bcrypt) and mount it again"
        set -- "$@" --htpasswd "$HTPASSWD"
    elif [ "${MODELPACK_INSECURE:-}" = "1" ]; then
        echo "modelpack-registry container: WARNING: no htpasswd at $HTPASSWD and" \
            "MODELPACK_INSECURE=1: anyone who can reach $HOST:$PORT can upload" >&2
        set -- "$@" --insecure
    else
        fail "no htpasswd secret at $HTPASSWD, so uploads cannot be authenticated." \
            "Mount one there (docker run -v \$PWD/htpasswd:/run/secrets/htpasswd:ro ...;" \
            "Kubernetes: the modelpack-registry-htpasswd Secret in deploy/)," \
            "point MODELPACK_HTPASSWD at it, or set MODELPACK_INSECURE=1 to allow" \
            "anonymous uploads on a trusted network"
    fi
    if [ -n "$data" ]; then
        set -- --data "$data" "$@"
    fi
    exec "$REGISTRY" serve "$@"
}

healthcheck() {
    case "$HOST" in 0.0.0.0 | :: | "[::]") check_host=127.0.0.1 ;; *) check_host=$HOST ;; esac
    exec python -c '
import os, sys, urllib.request
host, port = sys.argv[1:3]
host = "[%s]" % host.strip("[]") if ":" in host else host
url = "http://%s:%s%s/health" % (host, port, os.environ.get("SCRIPT_NAME", ""))
try:
    with urllib.request.urlopen(url, timeout=5) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except Exception as exc:
    print("unhealthy: %s: %s" % (url, exc), file=sys.stderr)
    sys.exit(1)
' "$check_host" "$PORT"
}

command=${1:-serve}
case "$command" in
    serve) [ "$#" -gt 0 ] && shift; serve "$@" ;;
    -*) serve "$@" ;;
    verify)
        shift
        # check the mounted secret too, and the users state/ names, unless told otherwise
        case " $* " in *" --htpasswd "* | *" --htpasswd="*) ;; *)
            [ -f "$HTPASSWD" ] && set -- --htpasswd "$HTPASSWD" "$@" ;;
        esac
        data=$(where "$@")
        if [ -n "$data" ]; then set -- --data "$data" "$@"; fi
        exec "$REGISTRY" verify "$@" ;;
    reindex)
        shift
        data=$(where "$@")
        if [ -n "$data" ]; then set -- --data "$data" "$@"; fi
        exec "$REGISTRY" reindex "$@" ;;
    healthcheck) healthcheck ;;
    *) exec "$@" ;;
esac
