#!/bin/sh
# Render nginx/*.template into $NGINX_RUN_DIR/conf/ and create nginx's
# run/temp directories. Used by start.sh, the tests and the nginx container.
# All variables must be set (start.sh exports them from app/config.py;
# docker-compose.yml sets them for the container).
# The Allow header of nginx's own 405s per app route: the lines of the $nginx_allow map
# that `python -m app nginx-allow` prints from the app's routes, read from the file
# NGINX_ALLOW_MAP names (start.sh and app/runtime/launcher.py write it), else from
# $NGINX_RUN_DIR/conf/allow.map if there, else from TEMPLATE_DIR/allow.map (committed: the
# shipped model repository's routes; the nginx container has no Python).
# Usage: nginx/render.sh [TEMPLATE_DIR]   -> prints the path of nginx.conf
set -eu
TEMPLATE_DIR=${1:-$(cd "$(dirname "$0")" && pwd)}
for v in NGINX_RUN_DIR NGINX_WORKER_PROCESSES NGINX_ERROR_LOG NGINX_ACCESS_LOG \
         APP_UPSTREAM BIND_HOST PORT MAX_BODY_BYTES STATIC_ROOT UPSTREAM_TIMEOUT \
         RATE_LIMIT_RPS RATE_LIMIT_BURST; do
    eval "val=\${$v-}"
    if [ -z "$val" ]; then
        echo "render.sh: $v is not set" >&2
        exit 2
    fi
done
# Only a root master may switch its workers to an unprivileged user.
if [ "$(id -u)" = "0" ]; then
    NGINX_USER_DIRECTIVE=${NGINX_USER_DIRECTIVE:-"user nobody nogroup;"}
else
    NGINX_USER_DIRECTIVE=""
fi
export NGINX_USER_DIRECTIVE
# Rate limiting: RATE_LIMIT_RPS=0 leaves the zone and limit_req out.
case "$RATE_LIMIT_RPS$RATE_LIMIT_BURST" in
    *[!0-9]*) echo "render.sh: RATE_LIMIT_RPS and RATE_LIMIT_BURST must be integers" >&2; exit 2 ;;
esac
if [ "$RATE_LIMIT_RPS" -gt 0 ]; then
    NGINX_RATE_LIMIT_ZONE="limit_req_zone \$rl_key zone=perclient:10m rate=${RATE_LIMIT_RPS}r/s;"
    NGINX_LIMIT_REQ="limit_req zone=perclient burst=${RATE_LIMIT_BURST} nodelay;"
else
    NGINX_RATE_LIMIT_ZONE="# rate limiting off (RATE_LIMIT_RPS=0)"
    NGINX_LIMIT_REQ="# rate limiting off (RATE_LIMIT_RPS=0)"
fi
NGINX_RATE_LIMIT_EXEMPT=""
for a in ${RATE_LIMIT_EXEMPT-}; do
    case "$a" in
        *[!0-9a-fA-F.:/]*) echo "render.sh: RATE_LIMIT_EXEMPT: not an address or CIDR: $a" >&2; exit 2 ;;
    esac
    NGINX_RATE_LIMIT_EXEMPT="$NGINX_RATE_LIMIT_EXEMPT    $a 1;
"
done
export NGINX_RATE_LIMIT_ZONE NGINX_LIMIT_REQ NGINX_RATE_LIMIT_EXEMPT
# Upstream: every APP_UPSTREAM address (spaces or commas between them) as a server with passive
# health checks; with APP_UPSTREAM_RESOLVER, the one name resolved at request time instead
# (valid=5s: replicas that come and go are seen within seconds; all addresses round-robin).
UPSTREAM_MAX_FAILS=${UPSTREAM_MAX_FAILS:-1}
UPSTREAM_FAIL_TIMEOUT=${UPSTREAM_FAIL_TIMEOUT:-10}
case "$UPSTREAM_MAX_FAILS$UPSTREAM_FAIL_TIMEOUT" in
    *[!0-9]*) echo "render.sh: UPSTREAM_MAX_FAILS and UPSTREAM_FAIL_TIMEOUT must be integers" >&2; exit 2 ;;
esac
addresses=$(echo "$APP_UPSTREAM" | tr ',' ' ')
for a in $addresses; do
    case "$a" in
        *[!0-9A-Za-z.:/_-]*) echo "render.sh: APP_UPSTREAM: not an address: $a" >&2; exit 2 ;;
    esac
done
if [ -n "${APP_UPSTREAM_RESOLVER-}" ]; then
    for r in $APP_UPSTREAM_RESOLVER; do
        case "$r" in
            *[!0-9a-fA-F.:]*) echo "render.sh: APP_UPSTREAM_RESOLVER: not an address: $r" >&2; exit 2 ;;
        esac
    done
    set -- $addresses
    if [ $# -ne 1 ]; then
        echo "render.sh: APP_UPSTREAM_RESOLVER takes one name in APP_UPSTREAM (got: $APP_UPSTREAM)" >&2
        exit 2
    fi
    NGINX_UPSTREAM="resolver $APP_UPSTREAM_RESOLVER valid=5s ipv6=off;
resolver_timeout 3s;"
    NGINX_UWSGI_PASS="set \$modelserver_app $1;
        uwsgi_pass \$modelserver_app;"
else
    NGINX_UPSTREAM="upstream modelserver_uwsgi {"
    for a in $addresses; do
        NGINX_UPSTREAM="$NGINX_UPSTREAM
    server $a max_fails=$UPSTREAM_MAX_FAILS fail_timeout=${UPSTREAM_FAIL_TIMEOUT}s;"
    done
    NGINX_UPSTREAM="$NGINX_UPSTREAM
}"
    NGINX_UWSGI_PASS="uwsgi_pass modelserver_uwsgi;"
fi
# ./start.sh cluster: /instances/K/metrics is instance K's own /metrics (loopback clients only),
# so that a Prometheus on the machine scrapes every instance (CLUSTER_INSTANCES: every address).
NGINX_INSTANCE_LOCATIONS=""
k=0
for a in ${CLUSTER_INSTANCES-}; do
    case "$a" in
        *[!0-9A-Za-z.:/_-]*) echo "render.sh: CLUSTER_INSTANCES: not an address: $a" >&2; exit 2 ;;
    esac
    k=$((k + 1))
    NGINX_INSTANCE_LOCATIONS="$NGINX_INSTANCE_LOCATIONS
    location = /instances/$k/metrics {
        allow 127.0.0.1;
        allow ::1;
        deny all;
        include /etc/nginx/uwsgi_params;
        uwsgi_param PATH_INFO /metrics;
        uwsgi_param REQUEST_URI /metrics;
        uwsgi_pass $a;
    }"
done
export NGINX_UPSTREAM NGINX_UWSGI_PASS NGINX_INSTANCE_LOCATIONS
if [ -n "${NGINX_ALLOW_MAP-}" ]; then
    ALLOW_MAP=$NGINX_ALLOW_MAP
elif [ -f "$NGINX_RUN_DIR/conf/allow.map" ]; then
    ALLOW_MAP=$NGINX_RUN_DIR/conf/allow.map
else
    ALLOW_MAP=$TEMPLATE_DIR/allow.map
fi
if [ ! -f "$ALLOW_MAP" ]; then
    echo "render.sh: the Allow map $ALLOW_MAP does not exist (python -m app nginx-allow > FILE)" >&2
    exit 2
fi
# only map lines ("regex" "METHODS";), comments and blank lines: nothing else gets into the config
if grep -Evq '^[[:space:]]*(#.*)?$|^[[:space:]]*"[^"]+"[[:space:]]+"[A-Z, ]+";[[:space:]]*$' "$ALLOW_MAP"; then
    echo "render.sh: $ALLOW_MAP: not the lines of an nginx map (\"regex\" \"METHODS\";)" >&2
    exit 2
fi
NGINX_ALLOW_ROUTES=$(cat "$ALLOW_MAP")
export NGINX_ALLOW_ROUTES
VARS='${NGINX_UPSTREAM} ${NGINX_UWSGI_PASS} ${NGINX_INSTANCE_LOCATIONS} ${NGINX_ALLOW_ROUTES} ${NGINX_RATE_LIMIT_ZONE} ${NGINX_LIMIT_REQ} ${NGINX_RATE_LIMIT_EXEMPT} ${NGINX_USER_DIRECTIVE} ${NGINX_RUN_DIR} ${NGINX_WORKER_PROCESSES} ${NGINX_ERROR_LOG} ${NGINX_ACCESS_LOG} ${APP_UPSTREAM} ${BIND_HOST} ${PORT} ${MAX_BODY_BYTES} ${STATIC_ROOT} ${UPSTREAM_TIMEOUT}'
mkdir -p "$NGINX_RUN_DIR/conf" "$NGINX_RUN_DIR/tmp"
for d in client_body proxy fastcgi uwsgi scgi; do mkdir -p "$NGINX_RUN_DIR/tmp/$d"; done
# A root master runs its workers as nobody: they must be able to write request bodies
# over client_body_buffer_size to the temp dirs (else such uploads fail with 500).
if [ "$NGINX_USER_DIRECTIVE" = "user nobody nogroup;" ]; then
    chown -R nobody:nogroup "$NGINX_RUN_DIR/tmp"
fi
envsubst "$VARS" < "$TEMPLATE_DIR/nginx.conf.template" > "$NGINX_RUN_DIR/conf/nginx.conf"
envsubst "$VARS" < "$TEMPLATE_DIR/modelserver.conf.template" > "$NGINX_RUN_DIR/conf/modelserver.conf"
envsubst "$VARS" < "$TEMPLATE_DIR/security-headers.conf.template" > "$NGINX_RUN_DIR/conf/security-headers.conf"
echo "$NGINX_RUN_DIR/conf/nginx.conf"
