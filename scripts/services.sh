#!/usr/bin/env bash
# Real services for hetflow's Slurm/SSH tests: a one-node Slurm cluster (munge, slurmctld, slurmd) and an sshd on
# 127.0.0.1 with key auth for a non-root test user who has a Python venv with the engine's cloudpickle version; that
# sshd also trusts a user CA (for OpenSSH certificates, as centers issue them). A second sshd demands the key and
# then a TOTP one-time code (keyboard-interactive through pam_google_authenticator), as MFA-protected centers do.
#
#   scripts/services.sh up            install (apt, Debian/Ubuntu) and start everything; idempotent; smoke-tests
#   scripts/services.sh down          cancel jobs, stop every daemon this script started (by pid file)
#   scripts/services.sh status        what runs (exit 0 when all four daemons run, 3 otherwise)
#   scripts/services.sh restart-sshd  stop sshd by its pid file and start it again with the same config
#
# Runs as root. Settings (environment):
#   HETFLOW_SERVICES  state directory (default /tmp/hetflow-services); `up` writes $HETFLOW_SERVICES/env.sh
#   HETFLOW_SSH_PORT  sshd port on 127.0.0.1 (default 2222)
#   HETFLOW_MFA_PORT  the MFA sshd's port on 127.0.0.1 (default 2223)
#   HETFLOW_SSH_USER  non-root user the tests log in as (default testuser; created if missing)
#   HETFLOW_PYTHON    the engine's Python; its cloudpickle version is installed for the user (default python3)
set -euo pipefail
umask 022

STATE=${HETFLOW_SERVICES:-/tmp/hetflow-services}
SSH_HOST=127.0.0.1
SSH_PORT=${HETFLOW_SSH_PORT:-2222}
MFA_PORT=${HETFLOW_MFA_PORT:-2223}
TEST_USER=${HETFLOW_SSH_USER:-testuser}
ENGINE_PY=${HETFLOW_PYTHON:-python3}
PACKAGES=(slurmctld slurmd slurm-client munge openssh-server openssh-client python3-venv libpam-google-authenticator iproute2
  oathtool)

SLURM_CONF=$STATE/etc/slurm.conf
export SLURM_CONF
MUNGE_DIR=$STATE/munge
MUNGE_SOCK=$MUNGE_DIR/run/munge.socket
MUNGE_PID=$MUNGE_DIR/run/munged.pid
SLURM_DIR=$STATE/slurm
SLURMCTLD_PID=$SLURM_DIR/run/slurmctld.pid
SLURMD_PID=$SLURM_DIR/run/slurmd.pid
SSH_DIR=$STATE/ssh
SSHD_CONFIG=$SSH_DIR/sshd_config
SSHD_PID=$SSH_DIR/sshd.pid
SSHD_LOG=$SSH_DIR/sshd.log
SSH_KEY=$SSH_DIR/id_ed25519
KNOWN_HOSTS=$SSH_DIR/known_hosts
USER_CA=$SSH_DIR/user_ca
MFA_DIR=$SSH_DIR/mfa
MFA_SERVICE=hetflow-mfa # sshd takes its PAM service from argv[0] (a symlink of this name); 15 chars at most: its comm
MFA_CONFIG=$MFA_DIR/sshd_config
MFA_PID=$MFA_DIR/sshd.pid
MFA_LOG=$MFA_DIR/sshd.log
MFA_SECRET=$MFA_DIR/totp_secret
USER_HOME=/home/$TEST_USER
VENV=$USER_HOME/hetflow-venv
ENV_FILE=$STATE/env.sh

LOG_TAG=services
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

# alive NAME PIDFILE: the pid file names a running process called NAME (guards against a recycled pid).
alive() {
  local pid
  pid=$(recorded_pid "$2") && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}
pid_of() { cat "$1"; }
port_open() { (exec 3<>"/dev/tcp/$SSH_HOST/$1") 2>/dev/null; }
wait_port() {  # wait_port PORT SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  return 1
}

require_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"; }

check_settings() {
  [[ $STATE == /* ]] || die "HETFLOW_SERVICES must be an absolute path (got '$STATE')"
  local var
  for var in SSH_PORT MFA_PORT; do
    if ! [[ ${!var} =~ ^[0-9]+$ ]] || ((${!var} < 1 || ${!var} > 65535)); then
      die "HETFLOW_$var must be a port number (got '${!var}')"
    fi
  done
  [ "$SSH_PORT" != "$MFA_PORT" ] || die "HETFLOW_SSH_PORT and HETFLOW_MFA_PORT must differ"
  [[ $TEST_USER =~ ^[a-z_][a-z0-9_-]*$ ]] || die "HETFLOW_SSH_USER '$TEST_USER' is not a valid user name"
  [ "$TEST_USER" != root ] || die "HETFLOW_SSH_USER must not be root"
}

# Serialise concurrent runs. Daemons are started with fd 9 closed so they never hold the lock.
lock() {
  mkdir -p "$STATE"
  chmod 755 "$STATE"
  exec 9>>"$STATE/.lock"
  flock -w 900 9 || die "another services.sh holds $STATE/.lock"
}

# ---------------------------------------------------------------------------------------------------------- up
POLICY_ADDED=0
cleanup() { if [ "$POLICY_ADDED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

install_packages() {
  begin
  local p missing=()
  # shellcheck disable=SC2016  # dpkg-query format strings, not shell expansions
  for p in "${PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
  done
  if [ ${#missing[@]} = 0 ]; then
    # shellcheck disable=SC2016
    step "packages: all installed ($(slurmctld -V), $(dpkg-query -W -f='${Version}' openssh-server | sed 's/^1://') openssh)"
    return
  fi
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get: this script supports Debian/Ubuntu"
  # Packages must not start system daemons (we run our own on other paths); respect an existing policy.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_ADDED=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get update -qq >"$STATE/apt.log" 2>&1; then
    tail -20 "$STATE/apt.log" >&2
    die "apt-get update failed (log: $STATE/apt.log)"
  fi
  if ! apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >>"$STATE/apt.log" 2>&1; then
    tail -20 "$STATE/apt.log" >&2
    die "apt-get install failed (log: $STATE/apt.log)"
  fi
  cleanup
  POLICY_ADDED=0
  step "packages: installed ${missing[*]} ($(slurmctld -V))"
}

ENGINE_CP=""
ENGINE_PYVER=""
check_engine_python() {
  begin
  local out
  out=$("$ENGINE_PY" -c 'import sys, cloudpickle; print(cloudpickle.__version__, "%d.%d" % sys.version_info[:2])' 2>&1) ||
    die "HETFLOW_PYTHON='$ENGINE_PY' cannot import cloudpickle: $(tail -1 <<<"$out")
  (point HETFLOW_PYTHON at the engine's Python, e.g. HETFLOW_PYTHON=.venv/bin/python)"
  read -r ENGINE_CP ENGINE_PYVER <<<"$out"
  step "engine python: $ENGINE_PY (Python $ENGINE_PYVER), cloudpickle $ENGINE_CP"
}

start_munge() {
  begin
  mkdir -p "$MUNGE_DIR"/{etc,run,log,lib}
  [ -s "$MUNGE_DIR/etc/munge.key" ] || dd if=/dev/urandom of="$MUNGE_DIR/etc/munge.key" bs=1024 count=1 status=none
  chown -R munge:munge "$MUNGE_DIR"
  chmod 755 "$MUNGE_DIR" "$MUNGE_DIR/run"
  chmod 700 "$MUNGE_DIR"/{etc,log,lib}
  chmod 400 "$MUNGE_DIR/etc/munge.key"
  local what="already running"
  if ! alive munged "$MUNGE_PID"; then
    rm -f "$MUNGE_PID"
    runuser -u munge -- munged --socket="$MUNGE_SOCK" --key-file="$MUNGE_DIR/etc/munge.key" \
      --log-file="$MUNGE_DIR/log/munged.log" --pid-file="$MUNGE_PID" \
      --seed-file="$MUNGE_DIR/lib/munged.seed" </dev/null >>"$STATE/daemons.log" 2>&1 9>&- ||
      { tail -5 "$STATE/daemons.log" >&2; die "munged did not start (logs: $STATE/daemons.log, $MUNGE_DIR/log/munged.log)"; }
    what="started"
  fi
  munge -n -S "$MUNGE_SOCK" | unmunge -S "$MUNGE_SOCK" >/dev/null || die "munge credential round trip failed on $MUNGE_SOCK"
  step "munged: $what, pid $(pid_of "$MUNGE_PID")"
}

write_slurm_conf() {
  mkdir -p "$STATE/etc" "$SLURM_DIR"/{state,spool,log,run}
  chmod 755 "$STATE/etc"
  local host node mem
  host=$(hostname -s)
  node=$(slurmd -C | head -1 | sed -E 's/ RealMemory=[0-9]+//')
  [[ $node == NodeName=* ]] || die "unexpected 'slurmd -C' output: $node"
  mem=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  cat >"$SLURM_CONF.new" <<EOF
# Written by hetflow scripts/services.sh; rewritten by every 'up'.
ClusterName=hetflow
SlurmctldHost=$host($SSH_HOST)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
EnforcePartLimits=ALL
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
$node RealMemory=$mem NodeAddr=$SSH_HOST State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=ALL MaxTime=00:01:00 State=UP
EOF
  chmod 644 "$SLURM_CONF.new"
  SLURM_CONF_CHANGED=0
  cmp -s "$SLURM_CONF.new" "$SLURM_CONF" || SLURM_CONF_CHANGED=1
  mv -f "$SLURM_CONF.new" "$SLURM_CONF"
  touch "$SLURM_DIR/log/jobcomp.txt"
  chmod 666 "$SLURM_DIR/log/jobcomp.txt" # readable and writable for a non-root 'sacct -c'
}

node_state() { sinfo -h -p debug -o %t 2>/dev/null | head -1; }

start_slurm() {
  begin
  write_slurm_conf
  local what=()
  if alive slurmctld "$SLURMCTLD_PID"; then
    if [ "$SLURM_CONF_CHANGED" = 1 ]; then
      scontrol reconfigure || die "scontrol reconfigure failed (log: $SLURM_DIR/log/slurmctld.log)"
      what+=("slurmctld reconfigured")
    else
      what+=("slurmctld running")
    fi
  else
    rm -f "$SLURMCTLD_PID"
    slurmctld </dev/null >>"$STATE/daemons.log" 2>&1 9>&- ||
      { tail -20 "$SLURM_DIR/log/slurmctld.log" >&2 || true; die "slurmctld did not start (log: $SLURM_DIR/log/slurmctld.log)"; }
    what+=("slurmctld started")
  fi
  if alive slurmd "$SLURMD_PID"; then
    what+=("slurmd running")
  else
    rm -f "$SLURMD_PID"
    slurmd </dev/null >>"$STATE/daemons.log" 2>&1 9>&- ||
      { tail -20 "$SLURM_DIR/log/slurmd.log" >&2 || true; die "slurmd did not start (log: $SLURM_DIR/log/slurmd.log)"; }
    what+=("slurmd started")
  fi
  # Wait for the node to be idle; 'mix'/'alloc' (jobs of a running test session) also mean it is up and healthy.
  local i st=""
  for ((i = 0; i < 300; i++)); do # 60 s
    st=$(node_state)
    case $st in idle | mix | alloc) break ;; esac
    sleep 0.2
  done
  case $st in
    idle | mix | alloc) ;;
    *)
      sinfo || true
      tail -20 "$SLURM_DIR/log/slurmctld.log" >&2 || true
      tail -20 "$SLURM_DIR/log/slurmd.log" >&2 || true
      die "Slurm node not idle after 60 s (state '${st:-none}'; logs under $SLURM_DIR/log)"
      ;;
  esac
  step "slurm: ${what[*]}; slurmctld pid $(pid_of "$SLURMCTLD_PID"), slurmd pid $(pid_of "$SLURMD_PID"); node $st"
}

ensure_user() {
  if ! id "$TEST_USER" >/dev/null 2>&1; then
    useradd -m -d "$USER_HOME" -s /bin/bash "$TEST_USER" || die "useradd $TEST_USER failed"
  fi
  # With 'UsePAM no' sshd refuses a locked account ('!' password, useradd's default): make it "no password" instead.
  local pw
  pw=$(getent shadow "$TEST_USER" | cut -d: -f2)
  if [[ $pw == '!'* ]]; then usermod -p '*' "$TEST_USER"; fi
  if [ ! -d "$USER_HOME" ]; then
    mkdir -p "$USER_HOME"
    chown "$TEST_USER:" "$USER_HOME"
  fi
}

write_sshd_config() {
  cat >"$SSHD_CONFIG.new" <<EOF
# Written by hetflow scripts/services.sh; rewritten by every 'up'.
Port $SSH_PORT
ListenAddress $SSH_HOST
HostKey $SSH_DIR/ssh_host_ed25519_key
PidFile $SSHD_PID
AuthorizedKeysFile $SSH_DIR/authorized_keys/%u
TrustedUserCAKeys $USER_CA.pub
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
SetEnv SLURM_CONF=$SLURM_CONF
LogLevel VERBOSE
EOF
  SSHD_CONFIG_CHANGED=0
  cmp -s "$SSHD_CONFIG.new" "$SSHD_CONFIG" || SSHD_CONFIG_CHANGED=1
  mv -f "$SSHD_CONFIG.new" "$SSHD_CONFIG"
  /usr/sbin/sshd -t -f "$SSHD_CONFIG" || die "sshd rejects $SSHD_CONFIG"
}

start_sshd_daemon() {
  if port_open "$SSH_PORT"; then
    die "port $SSH_HOST:$SSH_PORT is already in use by another process (not our sshd, pid file $SSHD_PID)"
  fi
  rm -f "$SSHD_PID"
  /usr/sbin/sshd -f "$SSHD_CONFIG" -E "$SSHD_LOG" </dev/null >>"$STATE/daemons.log" 2>&1 9>&- ||
    { tail -5 "$SSHD_LOG" >&2 || true; die "sshd did not start (log: $SSHD_LOG)"; }
  wait_port "$SSH_PORT" 10 || { tail -5 "$SSHD_LOG" >&2 || true; die "sshd does not answer on $SSH_HOST:$SSH_PORT (log: $SSHD_LOG)"; }
}

stop_sshd_daemon() {
  local pid i
  alive sshd "$SSHD_PID" || { rm -f "$SSHD_PID"; return 0; }
  pid=$(pid_of "$SSHD_PID")
  kill "$pid"
  for ((i = 0; i < 100; i++)); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then kill -9 "$pid"; fi
  rm -f "$SSHD_PID"
}

start_sshd() {
  begin
  mkdir -p "$SSH_DIR/authorized_keys" /run/sshd
  # Keys live under /tmp: sshd needs 'StrictModes no' and traversable (755) directories.
  chmod 755 "$SSH_DIR" "$SSH_DIR/authorized_keys" /run/sshd
  [ -s "$SSH_DIR/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C hetflow-host -f "$SSH_DIR/ssh_host_ed25519_key"
  [ -s "$SSH_KEY" ] || ssh-keygen -q -t ed25519 -N '' -C hetflow-tests -f "$SSH_KEY"
  [ -s "$USER_CA" ] || ssh-keygen -q -t ed25519 -N '' -C hetflow-user-ca -f "$USER_CA"
  chown root:root "$SSH_KEY" "$SSH_DIR/ssh_host_ed25519_key" "$USER_CA"
  chmod 600 "$SSH_KEY" "$SSH_DIR/ssh_host_ed25519_key" "$USER_CA"
  chmod 644 "$USER_CA.pub"
  ensure_user
  install -m 644 "$SSH_KEY.pub" "$SSH_DIR/authorized_keys/$TEST_USER"
  write_sshd_config
  local what="running"
  if alive sshd "$SSHD_PID"; then
    if [ "$SSHD_CONFIG_CHANGED" = 1 ]; then
      stop_sshd_daemon
      start_sshd_daemon
      what="restarted (config changed)"
    fi
  else
    start_sshd_daemon
    what="started"
  fi
  ssh-keyscan -p "$SSH_PORT" -t ed25519 "$SSH_HOST" 2>/dev/null >"$KNOWN_HOSTS.new" || true
  grep -q "^\[$SSH_HOST\]:$SSH_PORT ssh-ed25519 " "$KNOWN_HOSTS.new" || die "ssh-keyscan got no host key from $SSH_HOST:$SSH_PORT"
  chmod 644 "$KNOWN_HOSTS.new"
  mv -f "$KNOWN_HOSTS.new" "$KNOWN_HOSTS"
  step "sshd: $what, pid $(pid_of "$SSHD_PID") on $SSH_HOST:$SSH_PORT, user $TEST_USER"
}

# The MFA sshd: the same host key, user and authorized keys, then a one-time code. Generated with -D (a code may be
# used again) -u (no rate limit) -w 3: tests log in many times a minute; real centers are stricter.
start_mfa_sshd() {
  begin
  local home=$MFA_DIR/home/$TEST_USER
  local secret=$home/.google_authenticator
  mkdir -p "$home"
  chmod 755 "$MFA_DIR" "$MFA_DIR/home"
  if [ ! -s "$secret" ]; then
    google-authenticator -t -f -q -Q NONE -e 0 -D -u -w 3 -s "$secret" >/dev/null ||
      die "google-authenticator could not write $secret"
  fi
  head -1 "$secret" >"$MFA_SECRET"
  chmod 600 "$MFA_SECRET"
  chown -R "$TEST_USER:" "$home"
  chmod 700 "$home"
  chmod 400 "$secret"
  cat >"/etc/pam.d/$MFA_SERVICE" <<EOF
# Written by hetflow scripts/services.sh: the MFA test sshd's one-time codes.
auth     required pam_google_authenticator.so secret=$MFA_DIR/home/\${USER}/.google_authenticator
account  required pam_unix.so
session  required pam_permit.so
password required pam_deny.so
EOF
  cat >"$MFA_CONFIG.new" <<EOF
# Written by hetflow scripts/services.sh; rewritten by every 'up'.
Port $MFA_PORT
ListenAddress $SSH_HOST
HostKey $SSH_DIR/ssh_host_ed25519_key
PidFile $MFA_PID
AuthorizedKeysFile $SSH_DIR/authorized_keys/%u
UsePAM yes
PubkeyAuthentication yes
KbdInteractiveAuthentication yes
PasswordAuthentication no
AuthenticationMethods publickey,keyboard-interactive
AllowUsers $TEST_USER
StrictModes no
Subsystem sftp internal-sftp
LogLevel VERBOSE
EOF
  local changed=0 what=running
  cmp -s "$MFA_CONFIG.new" "$MFA_CONFIG" || changed=1
  mv -f "$MFA_CONFIG.new" "$MFA_CONFIG"
  ln -sf /usr/sbin/sshd "$MFA_DIR/$MFA_SERVICE"
  "$MFA_DIR/$MFA_SERVICE" -t -f "$MFA_CONFIG" || die "sshd rejects $MFA_CONFIG"
  if alive "$MFA_SERVICE" "$MFA_PID" && [ "$changed" = 1 ]; then
    kill "$(pid_of "$MFA_PID")"
    for _ in $(seq 1 100); do alive "$MFA_SERVICE" "$MFA_PID" || break; sleep 0.1; done
    what="restarted (config changed)"
  fi
  if ! alive "$MFA_SERVICE" "$MFA_PID"; then
    if port_open "$MFA_PORT"; then die "port $SSH_HOST:$MFA_PORT is already in use by another process"; fi
    rm -f "$MFA_PID"
    "$MFA_DIR/$MFA_SERVICE" -f "$MFA_CONFIG" -E "$MFA_LOG" </dev/null >>"$STATE/daemons.log" 2>&1 9>&- ||
      { tail -5 "$MFA_LOG" >&2 || true; die "the MFA sshd did not start (log: $MFA_LOG)"; }
    wait_port "$MFA_PORT" 10 || die "the MFA sshd does not answer on $SSH_HOST:$MFA_PORT (log: $MFA_LOG)"
    if [ "$what" = running ]; then what=started; fi
  fi
  ssh-keyscan -p "$MFA_PORT" -t ed25519 "$SSH_HOST" 2>/dev/null >>"$KNOWN_HOSTS" || true
  grep -q "^\[$SSH_HOST\]:$MFA_PORT ssh-ed25519 " "$KNOWN_HOSTS" || die "ssh-keyscan got no host key from $SSH_HOST:$MFA_PORT"
  step "mfa sshd: $what, pid $(pid_of "$MFA_PID") on $SSH_HOST:$MFA_PORT (publickey, then a TOTP code)"
}

# as_user CMD...: run as the test user in their home with a clean environment, keeping what pip needs
# (PIP_* settings, proxies, CA bundles; /etc/pip.conf is read by pip itself).
as_user() {
  local v env=(HOME="$USER_HOME" USER="$TEST_USER" LOGNAME="$TEST_USER" SHELL=/bin/bash
    PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8)
  while IFS= read -r v; do
    env+=("$v=${!v}")
  done < <(compgen -e | grep -E '^(PIP_[A-Z0-9_]+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE)$' || true)
  (cd "$USER_HOME" && runuser -u "$TEST_USER" -- env -i "${env[@]}" "$@")
}

setup_venv() {
  begin
  local what=() have="" owner
  if [ -e "$VENV" ]; then
    owner=$(stat -c %U "$VENV")
    if [ "$owner" != "$TEST_USER" ] || ! as_user "$VENV/bin/python" -c '' 2>/dev/null; then
      rm -rf "$VENV"
      what+=("removed broken venv")
    fi
  fi
  if [ ! -e "$VENV" ]; then
    as_user /usr/bin/python3 -m venv "$VENV" >"$STATE/venv.log" 2>&1 ||
      { tail -5 "$STATE/venv.log" >&2; die "'/usr/bin/python3 -m venv $VENV' failed as $TEST_USER (is python3-venv installed?)"; }
    what+=("created venv")
  fi
  have=$(as_user "$VENV/bin/python" -c 'import cloudpickle; print(cloudpickle.__version__)' 2>/dev/null || true)
  if [ "$have" = "$ENGINE_CP" ]; then
    what+=("cloudpickle $have present")
  else
    if ! as_user "$VENV/bin/python" -m pip install --quiet "cloudpickle==$ENGINE_CP" >"$STATE/pip.log" 2>&1; then
      # The user's pip may not see root's index configuration (e.g. mirrors in /root/.config/pip): fetch the wheel
      # with the engine's pip as root, then install it as the user from a local directory.
      log "pip as $TEST_USER failed (log: $STATE/pip.log); fetching the wheel with the engine's pip instead"
      rm -rf "$STATE/wheels"
      "$ENGINE_PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$STATE/wheels" "cloudpickle==$ENGINE_CP" \
        >>"$STATE/pip.log" 2>&1 || { tail -10 "$STATE/pip.log" >&2; die "cannot download cloudpickle==$ENGINE_CP (log: $STATE/pip.log)"; }
      chmod -R a+rX "$STATE/wheels"
      as_user "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$STATE/wheels" "cloudpickle==$ENGINE_CP" \
        >>"$STATE/pip.log" 2>&1 || { tail -10 "$STATE/pip.log" >&2; die "pip install cloudpickle==$ENGINE_CP failed as $TEST_USER (log: $STATE/pip.log)"; }
    fi
    have=$(as_user "$VENV/bin/python" -c 'import cloudpickle; print(cloudpickle.__version__)')
    [ "$have" = "$ENGINE_CP" ] || die "venv has cloudpickle '$have' after install, expected $ENGINE_CP"
    what+=("installed cloudpickle $have")
  fi
  local remote_pyver
  remote_pyver=$(as_user "$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$remote_pyver" != "$ENGINE_PYVER" ]; then
    log "WARNING: engine Python $ENGINE_PYVER, remote venv Python $remote_pyver: functions pickled by value carry" \
      "bytecode, which differs between Python versions"
  fi
  step "venv: ${what[*]} ($VENV, Python $remote_pyver)"
}

ssh_cmd() {
  SSH=(ssh -F /dev/null -i "$SSH_KEY" -p "$SSH_PORT" -o BatchMode=yes -o IdentitiesOnly=yes
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$KNOWN_HOSTS" -o ConnectTimeout=10
    "$TEST_USER@$SSH_HOST")
}

smoke_test() {
  begin
  local out state jid
  ssh_cmd
  # One connection: submit as the user, poll squeue until the job leaves the queue, then show its final record.
  out=$("${SSH[@]}" bash -s -- "$(printf '%q' "$VENV/bin/python")" <<'EOF'
set -eu
py=$1
jid=$(sbatch --parsable --output="$HOME/hetflow-smoke.out" --wrap "$py -c 'import cloudpickle'")
jid=${jid%%;*}
echo "JOBID=$jid"
for _ in $(seq 1 600); do
  [ -z "$(squeue -h -j "$jid" -o %T 2>/dev/null)" ] && break
  sleep 0.1
done
scontrol -o show job "$jid"
EOF
) || die "smoke test over ssh failed: $out"
  jid=$(sed -n 's/^JOBID=//p' <<<"$out")
  state=$(grep -oE 'JobState=[A-Z_]+' <<<"$out" | head -1 || true)
  if [ "$state" != JobState=COMPLETED ]; then
    printf '%s\n' "$out" >&2
    # shellcheck disable=SC2016  # expanded by the remote shell
    "${SSH[@]}" 'cat "$HOME/hetflow-smoke.out"' >&2 2>/dev/null || true
    die "smoke job ${jid:-?} ended ${state:-unknown} instead of COMPLETED (logs under $SLURM_DIR/log)"
  fi
  step "smoke test: job $jid as $TEST_USER via ssh ran '$VENV/bin/python -c \"import cloudpickle\"': COMPLETED"
}

env_vars() {
  printf '%s\n' \
    "HETFLOW_SSH_HOST=$SSH_HOST" \
    "HETFLOW_SSH_PORT=$SSH_PORT" \
    "HETFLOW_SSH_USER=$TEST_USER" \
    "HETFLOW_SSH_KEY=$SSH_KEY" \
    "HETFLOW_SSH_KNOWN_HOSTS=$KNOWN_HOSTS" \
    "HETFLOW_SSH_USER_CA=$USER_CA" \
    "HETFLOW_MFA_PORT=$MFA_PORT" \
    "HETFLOW_MFA_SECRET_FILE=$MFA_SECRET" \
    "HETFLOW_REMOTE_PYTHON=$VENV/bin/python" \
    "SLURM_CONF=$SLURM_CONF" \
    "HETFLOW_SSHD_PIDFILE=$SSHD_PID" \
    "HETFLOW_SSHD_CONFIG=$SSHD_CONFIG"
}

write_env() {
  local kv line="export"
  {
    echo "# hetflow test services (scripts/services.sh up); source this file."
    while IFS= read -r kv; do
      printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
      line+=" ${kv%%=*}=$(printf '%q' "${kv#*=}")"
    done < <(env_vars)
  } >"$ENV_FILE.new"
  chmod 644 "$ENV_FILE.new"
  mv -f "$ENV_FILE.new" "$ENV_FILE"
  log "env written to $ENV_FILE"
  echo "$line"
}

cmd_up() {
  require_root
  local t_all
  t_all=$(now)
  lock
  check_engine_python
  install_packages
  start_munge
  start_slurm
  start_sshd
  start_mfa_sshd
  setup_venv
  smoke_test
  T=$t_all
  step "all up"
  write_env
}

# -------------------------------------------------------------------------------------------------------- down
stop_all() {  # stop NAME:PIDFILE ... (TERM all, wait up to 10 s, then KILL)
  local x name pf pid i names=() pids=()
  for x in "$@"; do
    name=${x%%:*}
    pf=${x#*:}
    if alive "$name" "$pf"; then
      pid=$(pid_of "$pf")
      kill "$pid"
      names+=("$name")
      pids+=("$pid")
    else
      log "$name not running"
    fi
    rm -f "$pf"
  done
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    for _ in $(seq 1 100); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then
      log "${names[$i]} ($pid) ignored TERM: KILL"
      kill -9 "$pid"
    fi
    log "stopped ${names[$i]} ($pid)"
  done
}

cmd_down() {
  require_root
  begin
  [ -d "$STATE" ] || { log "nothing to stop ($STATE does not exist)"; return 0; }
  lock
  rm -f "$ENV_FILE"
  if alive slurmctld "$SLURMCTLD_PID"; then
    local jobs i
    jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      # shellcheck disable=SC2086  # a list of job ids
      scancel $jobs || true
      for ((i = 0; i < 50; i++)); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
      log "cancelled jobs: $jobs"
    fi
  fi
  stop_all sshd:"$SSHD_PID" "$MFA_SERVICE":"$MFA_PID" slurmd:"$SLURMD_PID" slurmctld:"$SLURMCTLD_PID"
  stop_all munged:"$MUNGE_PID" # last: the Slurm daemons talk to munge while shutting down
  step "all down (state kept in $STATE)"
}

# ------------------------------------------------------------------------------------------------------ status
cmd_status() {
  local ok=1 x name pf
  for x in munged:"$MUNGE_PID" slurmctld:"$SLURMCTLD_PID" slurmd:"$SLURMD_PID" sshd:"$SSHD_PID" \
    "$MFA_SERVICE":"$MFA_PID"; do
    name=${x%%:*}
    pf=${x#*:}
    if alive "$name" "$pf"; then
      printf '%-10s running, pid %s\n' "$name" "$(pid_of "$pf")"
    else
      printf '%-10s not running\n' "$name"
      ok=0
    fi
  done
  if port_open "$SSH_PORT"; then echo "ssh        $SSH_HOST:$SSH_PORT answers"; else echo "ssh        $SSH_HOST:$SSH_PORT closed"; fi
  if alive slurmctld "$SLURMCTLD_PID" && command -v sinfo >/dev/null; then
    sinfo -o '%P %a %l %D %t' 2>/dev/null | sed 's/^/slurm      /' || true
    echo "jobs       $(squeue -h 2>/dev/null | wc -l) in queue"
  fi
  if [ -s "$ENV_FILE" ]; then echo "env        $ENV_FILE"; fi
  [ "$ok" = 1 ] || return 3
}

cmd_restart_sshd() {
  require_root
  begin
  [ -s "$SSHD_CONFIG" ] || die "no $SSHD_CONFIG: run '$0 up' first"
  lock
  local old="none"
  if alive sshd "$SSHD_PID"; then old=$(pid_of "$SSHD_PID"); fi
  stop_sshd_daemon
  start_sshd_daemon
  step "sshd restarted: pid $old -> $(pid_of "$SSHD_PID") on $SSH_HOST:$SSH_PORT"
}

usage() { echo "usage: $0 up|down|status|restart-sshd" >&2; }

check_settings
case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  restart-sshd) cmd_restart_sshd ;;
  -h | --help | help) usage ;;
  *)
    usage
    exit 2
    ;;
esac
