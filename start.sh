#!/usr/bin/env bash
# Run the model server (nginx -> uWSGI -> Flask).
#
#   ./start.sh            start: docker-compose if a Docker engine answers,
#                         else the same stack natively; returns once /readyz is 200
#   ./start.sh native     start natively even if Docker is available
#   ./start.sh stop       stop exactly what start.sh started (pid files in $RUN_DIR)
#   ./start.sh status     show what is running
#   ./start.sh restart    stop + start
#   ./start.sh reload     graceful zero-downtime redeploy (touch-chain-reload)
#   ./start.sh uwsgi      run uWSGI in the foreground (the app container's command)
#   ./start.sh cluster N  N independent app instances (ports APP_SOCKET+0..N-1) behind one nginx
#   ./start.sh cluster-restart [K...]  rolling restart (all, or instances K), no failed request
#
# Configuration: environment variables, defaults in app/config.py
# (`python -m app env` prints them). PORT=9000 ./start.sh serves on :9000.
# start writes the stack's effective settings to $RUN_DIR/stack.env (API_KEYS left out);
# status, stop and reload read them from there, so `./start.sh status` after
# `PORT=9000 ./start.sh` looks at :9000 (only RUN_DIR must match: it says where the file is).
# restart stops the running stack with its settings, then starts with the environment's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
READY_TIMEOUT=${READY_TIMEOUT:-300}

log() { printf '[start.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

python_bin() {
    if [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"; else command -v python3; fi
}

load_env() {
    # Defaults for everything not set (single source: app/config.py).
    local py; py=$(python_bin)
    eval "$(cd "$ROOT" && "$py" -m app env)"
    # The native/compose stack always runs with exact multi-worker metrics.
    if [[ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]]; then
        export PROMETHEUS_MULTIPROC_DIR="$RUN_DIR/prometheus"
    fi
}

# --- the running stack's settings ($RUN_DIR/stack.env) -------------------------
stack_env_file() {
    local run=${RUN_DIR:-run}
    [[ "$run" == /* ]] || run="${APP_ROOT:-$ROOT}/$run"
    echo "$run/stack.env"
}

# load_stack_env [quiet]: export the settings of the stack started from this RUN_DIR (if
# stack.env is there); they replace the environment's, with a note when one differs.
load_stack_env() {
    local f line name old
    f=$(stack_env_file)
    [[ -f "$f" ]] || return 0
    while IFS= read -r line; do
        [[ "$line" =~ ^export\ ([A-Z][A-Z0-9_]*)= ]] || continue
        name=${BASH_REMATCH[1]}
        old=${!name-}
        [[ -n "${!name+set}" ]] || old=$'\x01unset'
        eval "$line"
        if [[ "${1:-}" != quiet && "$old" != $'\x01unset' && "$old" != "${!name}" ]]; then
            log "note: using the running stack's $name=${!name} ($f) instead of $name=$old"
        fi
    done < "$f"
}

write_stack_env() {
    # after load_env, so every setting is exported: their effective values, one a line
    local f="$RUN_DIR/stack.env"
    (umask 077 && "$(python_bin)" - > "$f.tmp" <<'PY') && mv -f "$f.tmp" "$f"
import shlex
from app.config import SETTINGS, effective_env
eff = effective_env()
print("# settings of the stack start.sh started (read by start.sh status/stop/reload)")
for s in SETTINGS:
    v = eff[s.name]
    if s.name != "API_KEYS" and "\n" not in v:
        print(f"export {s.name}={shlex.quote(v)}")
PY
}

stack_base() {
    local host=$BIND_HOST
    [[ "$host" == 0.0.0.0 ]] && host=127.0.0.1
    echo "http://${host}:${PORT}"
}

reset_metrics_dir() {
    # Stale files from an earlier run would be summed into the new counts.
    rm -rf "$PROMETHEUS_MULTIPROC_DIR"
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
}

prepare_dirs() {
    mkdir -p "$RUN_DIR" "$(dirname "$TOUCH_RELOAD")" "$(dirname "$TOUCH_CHAIN_RELOAD")"
    touch "$TOUCH_RELOAD" "$TOUCH_CHAIN_RELOAD"
}

migrate_db() {
    # ACCOUNTS=1: bring the accounts database to this code's schema before any worker starts
    # (a schema newer than the code stops the start here, with the reason)
    [[ "${ACCOUNTS:-0}" == 1 ]] || return 0
    local py="$ROOT/.venv/bin/python"
    [[ -x "$py" ]] || py=python3
    ( cd "$ROOT" && "$py" -m app db upgrade ) || die "database migration failed (ACCOUNTS=1, see above)"
}

# --- container command -------------------------------------------------------
cmd_uwsgi() {
    load_env
    prepare_dirs
    reset_metrics_dir
    migrate_db
    exec uwsgi --ini "$ROOT/app.ini"
}

# --- native stack -------------------------------------------------------------
ensure_venv() {
    if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
        log "creating .venv"
        python3 -m venv "$ROOT/.venv"
    fi
    if [[ ! -x "$ROOT/.venv/bin/uwsgi" ]] || ! "$ROOT/.venv/bin/python" -c 'import flask, prometheus_client, PIL, cv2' 2>/dev/null; then
        log "installing requirements.txt into .venv"
        "$ROOT/.venv/bin/pip" install -q -r "$ROOT/requirements.txt"
    fi
    # the project itself, editable (pyproject.toml): app, training and bench import from
    # anywhere, also in the scripts run as files (training/nose_tracker/train.py, bench/run.py)
    if ! "$ROOT/.venv/bin/python" -c 'import importlib.metadata as m; m.distribution("modelserver")' 2>/dev/null; then
        log "installing the project into .venv (pip install -e .)"
        "$ROOT/.venv/bin/pip" install -q -e "$ROOT"
    fi
    export VIRTUAL_ENV="$ROOT/.venv"
}

ensure_nginx() {
    if ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "installing nginx (apt-get)"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx gettext-base >/dev/null
        else
            die "nginx is not installed (install it, or run start.sh as root to apt-get it)"
        fi
    fi
    command -v envsubst >/dev/null 2>&1 || die "envsubst (gettext-base) is not installed"
}

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

# pid_alive PIDFILE NAME: the pid in PIDFILE is alive and its command mentions NAME
pid_alive() {
    local f=$1 name=$2 pid
    [[ -s "$f" ]] || return 1
    pid=$(tr -dc '0-9' < "$f")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qi "$name"
}

http_status() {
    "$(python_bin)" - "$1" <<'PY' 2>/dev/null || echo 000
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
}

wait_ready() {
    local url=$1 deadline=$((SECONDS + READY_TIMEOUT)) code
    while (( SECONDS < deadline )); do
        code=$(http_status "$url")
        if [[ "$code" == 200 ]]; then
            log "ready after ${SECONDS}s: $url"
            return 0
        fi
        sleep 1
    done
    log "not ready after ${READY_TIMEOUT}s (last status $code); see $RUN_DIR/uwsgi.log and $NGINX_ERROR_LOG"
    return 1
}

stack_up() { pid_alive "$APP_PIDFILE" uwsgi && pid_alive "$NGINX_RUN_DIR/nginx.pid" nginx; }

start_native() {
    ensure_venv
    ensure_nginx
    load_env
    local base
    if ( load_stack_env quiet && stack_up ); then
        load_stack_env  # the running stack's settings (its port), with a note where they differ
        base=$(stack_base)
        log "already running (uWSGI pid $(cat "$APP_PIDFILE"), nginx pid $(cat "$NGINX_RUN_DIR/nginx.pid"))"
        wait_ready "$base/readyz"
        echo "$base/"
        return 0
    fi
    # leftovers of an earlier stack, stopped with that stack's settings (in a subshell: they
    # must not replace the ones this start was asked for)
    ( stop_native quiet )
    base=$(stack_base)
    prepare_dirs
    reset_metrics_dir
    write_stack_env
    echo native > "$RUN_DIR/mode"

    migrate_db
    log "starting uWSGI ($WORKERS workers x $THREADS threads) on $APP_SOCKET"
    setsid "$ROOT/.venv/bin/uwsgi" --ini "$ROOT/app.ini" >> "$RUN_DIR/uwsgi.log" 2>&1 < /dev/null &
    for _ in $(seq 1 100); do pid_alive "$APP_PIDFILE" uwsgi && break; sleep 0.1; done
    pid_alive "$APP_PIDFILE" uwsgi || { tail -20 "$RUN_DIR/uwsgi.log" >&2; die "uWSGI did not start"; }

    # nginx's Allow map from the app's routes, as app/runtime/launcher.py (tests, benchmark)
    # writes it: the command leaves nothing in the metrics directory
    local conf allow_map="$NGINX_RUN_DIR/conf/allow.map"
    mkdir -p "$NGINX_RUN_DIR/conf"
    env -u PROMETHEUS_MULTIPROC_DIR "$(python_bin)" -m app nginx-allow > "$allow_map.tmp" \
        || die "python -m app nginx-allow failed"
    mv -f "$allow_map.tmp" "$allow_map"
    conf=$(NGINX_ALLOW_MAP="$allow_map" "$ROOT/nginx/render.sh")
    "$(nginx_bin)" -t -q -e "$NGINX_ERROR_LOG" -p "$NGINX_RUN_DIR" -c "$conf" || die "nginx config test failed"
    log "starting nginx on $base"
    "$(nginx_bin)" -e "$NGINX_ERROR_LOG" -p "$NGINX_RUN_DIR" -c "$conf"
    wait_ready "$base/readyz" || die "the stack did not become ready"
    echo "$base/"
}

# stop_pid PIDFILE NAME SIGNAL WAIT_SECONDS: graceful signal, then KILL after the wait
stop_pid() {
    local f=$1 name=$2 sig=$3 wait=${4:-30} pid
    if pid_alive "$f" "$name"; then
        pid=$(tr -dc '0-9' < "$f")
        log "stopping $name (pid $pid)"
        kill "-$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 1 $((wait * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) did not stop in $wait s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$f"
}

stop_native() {
    load_stack_env "${1:-}"
    load_env
    # uWSGI first (in-flight requests finish, up to RELOAD_MERCY), nginx last
    stop_pid "$APP_PIDFILE" uwsgi TERM $((RELOAD_MERCY + 10))
    stop_pid "$NGINX_RUN_DIR/nginx.pid" nginx QUIT 30
    rm -f "$RUN_DIR/mode" "$RUN_DIR/stack.env"
    [[ "${1:-}" == quiet ]] || log "stopped"
}

# --- cluster: N independent app instances behind one nginx --------------------
# Each instance is a whole uWSGI (master, WORKERS workers, their own models) on its own
# loopback port (APP_SOCKET's port + K - 1) with its own run directory $RUN_DIR/instance-K
# (pid, stats, prometheus files, reload files). nginx balances over them with passive health
# checks (UPSTREAM_MAX_FAILS, UPSTREAM_FAIL_TIMEOUT). cluster-restart takes an instance out of
# nginx's upstream before stopping it, so a rolling restart fails no request.
cluster_base() {
    CLUSTER_RUN_DIR=$RUN_DIR
    CLUSTER_SOCKET=$APP_SOCKET
    [[ "$CLUSTER_SOCKET" =~ ^[0-9.]+:[0-9]+$ ]] || die "cluster: APP_SOCKET must be HOST:PORT (got $APP_SOCKET)"
}

# instance_env K: export instance K's own settings
instance_env() {
    local k=$1
    export RUN_DIR="$CLUSTER_RUN_DIR/instance-$k"
    export APP_SOCKET="${CLUSTER_SOCKET%:*}:$(( ${CLUSTER_SOCKET##*:} + k - 1 ))"
    export APP_PIDFILE="$RUN_DIR/uwsgi.pid" STATS_SOCKET="$RUN_DIR/uwsgi-stats.sock"
    export PROMETHEUS_MULTIPROC_DIR="$RUN_DIR/prometheus"
    export TOUCH_RELOAD="$RUN_DIR/reload/reload" TOUCH_CHAIN_RELOAD="$RUN_DIR/reload/chain-reload"
}

cluster_size() { cat "$CLUSTER_RUN_DIR/cluster" 2>/dev/null || echo 0; }

instance_ready() {  # instance_ready K [timeout]: its /readyz answers 200 over the uwsgi protocol
    local k=$1 deadline=$((SECONDS + ${2:-$READY_TIMEOUT}))
    ( instance_env "$k"
      while (( SECONDS < deadline )); do
          "$(python_bin)" -m app healthcheck --socket "$APP_SOCKET" --path /readyz >/dev/null 2>&1 && exit 0
          sleep 1
      done
      exit 1 ) || { log "instance $k not ready; see $CLUSTER_RUN_DIR/instance-$k/uwsgi.log"; return 1; }
}

instance_start() {
    local k=$1
    ( instance_env "$k"
      pid_alive "$APP_PIDFILE" uwsgi && { log "instance $k already running"; exit 0; }
      prepare_dirs
      reset_metrics_dir
      log "instance $k: uWSGI ($WORKERS workers x $THREADS threads) on $APP_SOCKET"
      setsid "$ROOT/.venv/bin/uwsgi" --ini "$ROOT/app.ini" >> "$RUN_DIR/uwsgi.log" 2>&1 < /dev/null &
      for _ in $(seq 1 100); do pid_alive "$APP_PIDFILE" uwsgi && exit 0; sleep 0.1; done
      tail -20 "$RUN_DIR/uwsgi.log" >&2; exit 1 ) || die "instance $k: uWSGI did not start"
}

instance_stop() {
    ( instance_env "$1"; stop_pid "$APP_PIDFILE" uwsgi TERM $((RELOAD_MERCY + 10)) )
}

# cluster_nginx: render nginx over every instance not taken out ($RUN_DIR/cluster-out) and
# start nginx, or reload it (HUP: graceful) when running
cluster_nginx() {
    local n k upstream="" all="" conf allow_map="$NGINX_RUN_DIR/conf/allow.map"
    n=$(cluster_size)
    for k in $(seq 1 "$n"); do
        all="$all $(instance_env "$k"; echo "$APP_SOCKET")"
        grep -qx "$k" "$CLUSTER_RUN_DIR/cluster-out" 2>/dev/null && continue
        upstream="$upstream $(instance_env "$k"; echo "$APP_SOCKET")"
    done
    [[ -n "$upstream" ]] || die "cluster: every instance is out of the upstream"
    mkdir -p "$NGINX_RUN_DIR/conf"
    if [[ ! -s "$allow_map" ]]; then
        env -u PROMETHEUS_MULTIPROC_DIR "$(python_bin)" -m app nginx-allow > "$allow_map.tmp" \
            || die "python -m app nginx-allow failed"
        mv -f "$allow_map.tmp" "$allow_map"
    fi
    conf=$(APP_UPSTREAM="${upstream# }" CLUSTER_INSTANCES="${all# }" NGINX_ALLOW_MAP="$allow_map" "$ROOT/nginx/render.sh")
    "$(nginx_bin)" -t -q -e "$NGINX_ERROR_LOG" -p "$NGINX_RUN_DIR" -c "$conf" || die "nginx config test failed"
    if pid_alive "$NGINX_RUN_DIR/nginx.pid" nginx; then
        kill -HUP "$(cat "$NGINX_RUN_DIR/nginx.pid")"
        sleep 1  # the new workers have the new upstream
    else
        "$(nginx_bin)" -e "$NGINX_ERROR_LOG" -p "$NGINX_RUN_DIR" -c "$conf"
    fi
    log "nginx upstream:${upstream}"
}

cmd_cluster() {
    local n=${1:-} k
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "usage: $0 cluster N (N >= 1 app instances)"
    ensure_venv
    ensure_nginx
    load_env
    ( stop_native quiet )
    cluster_base
    mkdir -p "$RUN_DIR"
    write_stack_env
    echo cluster > "$RUN_DIR/mode"
    echo "$n" > "$RUN_DIR/cluster"
    rm -f "$RUN_DIR/cluster-out"
    for k in $(seq 1 "$n"); do instance_start "$k"; done
    for k in $(seq 1 "$n"); do instance_ready "$k" || die "instance $k did not become ready"; done
    cluster_nginx
    wait_ready "$(stack_base)/readyz" || die "the cluster did not become ready"
    echo "$(stack_base)/"
}

cluster_load() {
    load_stack_env quiet
    load_env
    [[ -f "$RUN_DIR/mode" && $(cat "$RUN_DIR/mode") == cluster ]] || die "no cluster runs from $RUN_DIR (./start.sh cluster N)"
    cluster_base
}

# cluster-restart K...: take each out of the upstream, stop it gracefully (in-flight requests
# finish), start it, wait until its models are ready, put it back: one at a time
cmd_cluster_restart() {
    local k n
    cluster_load
    n=$(cluster_size)
    (( $# )) || set -- $(seq 1 "$n")
    for k in "$@"; do
        [[ "$k" =~ ^[0-9]+$ ]] && (( k >= 1 && k <= n )) || die "no instance $k (1..$n)"
        echo "$k" >> "$RUN_DIR/cluster-out"
        cluster_nginx
        instance_stop "$k"
        instance_start "$k"
        instance_ready "$k" || die "instance $k did not become ready"
        grep -vx "$k" "$RUN_DIR/cluster-out" > "$RUN_DIR/cluster-out.tmp" || true
        mv -f "$RUN_DIR/cluster-out.tmp" "$RUN_DIR/cluster-out"
        cluster_nginx
        log "instance $k restarted"
    done
}

stop_cluster() {
    local k
    for k in $(seq 1 "$(cluster_size)"); do instance_stop "$k"; done
    stop_pid "$NGINX_RUN_DIR/nginx.pid" nginx QUIT 30
    rm -f "$RUN_DIR/mode" "$RUN_DIR/stack.env" "$RUN_DIR/cluster" "$RUN_DIR/cluster-out"
    log "stopped"
}

status_cluster() {
    local k
    for k in $(seq 1 "$(cluster_size)"); do
        ( instance_env "$k"
          state=stopped; pid_alive "$APP_PIDFILE" uwsgi && state="running (pid $(cat "$APP_PIDFILE"))"
          grep -qx "$k" "$CLUSTER_RUN_DIR/cluster-out" 2>/dev/null && state="$state, out of the upstream"
          echo "instance $k ($APP_SOCKET): $state" )
    done
}

# --- docker -------------------------------------------------------------------
compose() {
    if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

docker_available() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

start_docker() {
    mkdir -p "$ROOT/run" "$ROOT/var/reload"
    touch "$ROOT/var/reload/reload" "$ROOT/var/reload/chain-reload"
    compose up -d --build
    echo docker > "$ROOT/run/mode"
    local port=${PORT:-8080}
    printf '# the docker-compose stack start.sh started\nexport PORT=%q\n' "$port" > "$ROOT/run/stack.env"
    RUN_DIR="$ROOT/run" NGINX_ERROR_LOG="docker-compose logs" wait_ready "http://127.0.0.1:${port}/readyz" \
        || die "the stack did not become ready (docker-compose logs)"
    echo "http://127.0.0.1:${port}/"
}

cmd_start() {
    if [[ "${1:-}" != native ]] && docker_available; then
        start_docker
    else
        [[ "${1:-}" == native ]] || log "no Docker engine answers: starting the stack natively"
        start_native
    fi
}

cmd_stop() {
    if [[ -f "$ROOT/run/mode" && $(cat "$ROOT/run/mode") == docker ]]; then
        compose down
        rm -f "$ROOT/run/mode" "$ROOT/run/stack.env"
    elif ( load_stack_env quiet; load_env; [[ -f "$RUN_DIR/mode" && $(cat "$RUN_DIR/mode") == cluster ]] ); then
        cluster_load
        stop_cluster
    else
        stop_native
    fi
}

cmd_status() {
    load_stack_env
    load_env
    local f; f=$(stack_env_file)
    if [[ -f "$f" ]]; then echo "settings: $f"; else echo "settings: environment (no $f)"; fi
    if [[ -f "$RUN_DIR/mode" && $(cat "$RUN_DIR/mode") == cluster ]]; then
        cluster_base
        status_cluster
    elif pid_alive "$APP_PIDFILE" uwsgi; then echo "uwsgi: running (pid $(cat "$APP_PIDFILE"))"; else echo "uwsgi: stopped"; fi
    if pid_alive "$NGINX_RUN_DIR/nginx.pid" nginx; then echo "nginx: running (pid $(cat "$NGINX_RUN_DIR/nginx.pid"))"; else echo "nginx: stopped"; fi
    echo "readyz: $(http_status "$(stack_base)/readyz") ($(stack_base)/readyz)"
}

cmd_reload() {
    load_stack_env
    load_env
    mkdir -p "$(dirname "$TOUCH_CHAIN_RELOAD")"
    touch "$TOUCH_CHAIN_RELOAD"
    log "chain reload requested ($TOUCH_CHAIN_RELOAD)"
}

case "${1:-start}" in
    start|up) cmd_start "${2:-}" ;;
    native) cmd_start native ;;
    stop|down) cmd_stop ;;
    restart) ( cmd_stop ); cmd_start "${2:-}" ;;
    status) cmd_status ;;
    reload) cmd_reload ;;
    uwsgi) cmd_uwsgi ;;
    cluster) cmd_cluster "${2:-}" ;;
    cluster-restart) shift; cmd_cluster_restart "$@" ;;
    *) echo "usage: $0 [start|native|stop|restart|status|reload|uwsgi|cluster N|cluster-restart [K...]]" >&2; exit 2 ;;
esac
