# Shell helpers that scripts/services.sh and scripts/hub.sh share; they set LOG_TAG, then source this file.

log() { printf '[%s] %s\n' "$LOG_TAG" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }
now() { date +%s%N; }
elapsed() { local ms=$((($(now) - $1) / 1000000)); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }
T=0
begin() { T=$(now); }
step() { printf '[%s] %8ss  %s\n' "$LOG_TAG" "$(elapsed "$T")" "$*"; }

# running PID: the process exists and is not a zombie. PID 1 here (and in many containers) reaps orphans late: a
# stopped daemon stays a zombie for a second or two, and 'kill -0' still succeeds on it.
running() {
  local st
  st=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
# recorded_pid PIDFILE: prints the pid the file names when that process runs (the caller checks it is the right one)
recorded_pid() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && running "$pid" && echo "$pid"
}
