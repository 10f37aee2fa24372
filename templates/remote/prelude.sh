# Functions every provisioning step can use; the step bundle sources this text before its script.
# Files are written only when their content differs, so a re-run rewrites nothing, and a step
# knows whether it must restart its service: ms_changed is true when a file of this step was
# rewritten now, or when this exact step (same content hash) never finished on this host.

MS_STATE_DIR=/var/lib/matrix-stack/steps
MS_CHANGED_FILES=()
MS_PREVIOUS_SUFFIX=.ms-previous

# A step whose files carry secrets (MS_PRIVATE_LOG set) keeps what its commands print in a root-only
# log on the server: a tool that echoes a statement or a config line can never put a secret into the
# `pulumi up` output. Only ms_log lines (which name paths and states, never values) reach it.
if [ -n "${MS_PRIVATE_LOG:-}" ]; then
  install -d -m 0700 "$(dirname "$MS_PRIVATE_LOG")"
  touch "$MS_PRIVATE_LOG"
  chmod 0600 "$MS_PRIVATE_LOG"
  exec 3>&2 >>"$MS_PRIVATE_LOG" 2>&1
  printf '\n=== %s %s ===\n' "$(date -u +%FT%TZ)" "$MS_STEP_HASH"
  ms_report_failure() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
      printf '[matrix-stack:%s] FAILED (exit %s); what its commands printed is in %s on the server (root only)\n' \
        "$MS_STEP" "$rc" "$MS_PRIVATE_LOG" >&3
    fi
  }
  trap ms_report_failure EXIT
else
  exec 3>&2
fi

ms_log() {
  printf '[matrix-stack:%s] %s\n' "$MS_STEP" "$*" >&3
  if [ -n "${MS_PRIVATE_LOG:-}" ]; then
    printf '[matrix-stack:%s] %s\n' "$MS_STEP" "$*"
  fi
}

# ms_put_file PATH MODE OWNER GROUP  (base64 content on stdin)
ms_put_file() {
  local path=$1 mode=$2 owner=$3 group=$4 dir tmp
  dir=$(dirname "$path")
  [ -d "$dir" ] || install -d -m 0755 "$dir"
  tmp=$(mktemp "$path.ms-XXXXXX")
  base64 -d > "$tmp"
  chown "$owner:$group" "$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    # stat prints the mode in octal without a leading zero (0644 -> 644).
    [ "$(stat -c '%a %U %G' "$path")" = "$(printf '%o' "$((8#$mode))") $owner $group" ] || {
      chown "$owner:$group" "$path"
      chmod "$mode" "$path"
    }
  else
    # Keep the file it replaces until the step's validation accepts the new one (ms_validated).
    if [ -f "$path" ]; then
      cp -p "$path" "$path$MS_PREVIOUS_SUFFIX"
    else
      rm -f "$path$MS_PREVIOUS_SUFFIX"
    fi
    mv -f "$tmp" "$path"
    MS_CHANGED_FILES+=("$path")
    ms_log "wrote $path"
  fi
}

# ms_validated CMD...: run the real tool's check of the files this step just wrote. If it rejects
# them, every file this run changed goes back to what it was (or away, if it is new), so a rejected
# config is never left on disk for the next restart or reboot; returns CMD's failure.
ms_validated() {
  local f
  if "$@"; then
    for f in "${MS_CHANGED_FILES[@]}"; do
      rm -f "$f$MS_PREVIOUS_SUFFIX"
    done
    return 0
  fi
  for f in "${MS_CHANGED_FILES[@]}"; do
    if [ -f "$f$MS_PREVIOUS_SUFFIX" ]; then
      mv -f "$f$MS_PREVIOUS_SUFFIX" "$f"
      ms_log "restored the previous $f"
    else
      rm -f "$f"
      ms_log "removed the rejected new $f"
    fi
  done
  MS_CHANGED_FILES=()
  return 1
}

# True when PATH (or, given '', any file of this step) was rewritten in this run.
ms_file_changed() {
  local f wanted=$1
  for f in "${MS_CHANGED_FILES[@]}"; do
    if [ -z "$wanted" ] || [ "$f" = "$wanted" ]; then
      return 0
    fi
  done
  return 1
}

# Enable units (and start them, with --now). Each `systemctl enable` regenerates the unit's links and
# reloads systemd (about 0.3 s on one CPU, 0.8 s for a unit whose package also ships a SysV script):
# when this step changed nothing and the unit is already enabled (and active, with --now), that is
# skipped; a changed step always enables, so a new [Install] section takes effect.
ms_enable() {
  local now=() unit
  if [ "${1:-}" = --now ]; then
    now=(--now)
    shift
  fi
  for unit in "$@"; do
    if ! ms_changed && [ "$(systemctl is-enabled "$unit" 2>/dev/null || true)" = enabled ] &&
      { [ ${#now[@]} -eq 0 ] || systemctl is-active --quiet "$unit"; }; then
      continue
    fi
    systemctl enable --quiet "${now[@]}" "$unit"
  done
}

# True when this step's content is new to this host or a file was rewritten: time to (re)start.
ms_changed() {
  ms_file_changed '' && return 0
  [ "$(cat "$MS_STATE_DIR/$MS_STEP" 2>/dev/null || true)" != "$MS_STEP_HASH" ]
}

ms_step_done() {
  local f
  for f in "${MS_CHANGED_FILES[@]}"; do
    rm -f "$f$MS_PREVIOUS_SUFFIX"
  done
  install -d -m 0700 "$MS_STATE_DIR"
  printf '%s\n' "$MS_STEP_HASH" > "$MS_STATE_DIR/$MS_STEP"
}

# Run apt-get non-interactively, waiting for other apt/dpkg users (cloud-init, unattended-upgrades).
# DPkg::Lock::Timeout makes apt wait for dpkg's locks only; the package lists' lock (held by an
# `apt-get update` a fresh droplet's apt-daily or cloud-init runs) fails at once with "Could not get
# lock", so any such failure is retried here, up to MS_APT_LOCK_WAIT seconds.
MS_APT_LOCK_WAIT=${MS_APT_LOCK_WAIT:-600}
ms_apt() {
  local err rc waited=0
  err=$(mktemp)
  while :; do
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$MS_APT_LOCK_WAIT" \
      -o Dpkg::Options::=--force-confold -y -q "$@" 2>"$err" || rc=$?
    if [ "$rc" -ne 0 ] && grep -q '^E: Could not get lock' "$err" && [ "$waited" -lt "$MS_APT_LOCK_WAIT" ]; then
      [ "$waited" -gt 0 ] || ms_log "another apt is running ($(grep -m1 -o 'held by process.*' "$err" || echo 'lock held')); waiting for it"
      sleep 3
      waited=$((waited + 3))
      continue
    fi
    cat "$err" >&2
    rm -f "$err"
    return "$rc"
  done
}

# One step at a time on this server. A lost SSH session (a killed `pulumi up`, a dropped network)
# does not stop its step here: the step runs on until it ends or first writes to the closed
# session. The next run waits for it instead of doing the same work at the same time (two pips
# in one venv, two pg_createclusters, two certbots).
install -d -m 0700 /var/lib/matrix-stack
exec 9>>/var/lib/matrix-stack/steps.lock
if ! flock -n 9; then
  ms_log "an earlier matrix-stack step is still running on this server (lost session?); waiting for it"
  flock -w 1500 9 || {
    ms_log "ERROR: the earlier step still holds /var/lib/matrix-stack/steps.lock after 25 minutes"
    exit 1
  }
fi
