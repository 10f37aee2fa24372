# Functions every provisioning step can use; the step bundle sources this text before its script.
# Files are written only when their content differs, so a re-run rewrites nothing, and a step
# knows whether it must restart its service: ms_changed is true when a file of this step was
# rewritten now, or when this exact step (same content hash) never finished on this host.

MS_STATE_DIR=/var/lib/matrix-stack/steps
MS_CHANGED_FILES=()

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

# Root never writes through a path a service user can change. Every file of a step is decoded into a
# root-only staging directory, then placed by ms_place (python3, which cloud-init's image always has):
# it walks the target's directories from / holding each one open, refusing a symbolic link inside a
# directory anyone but root could have made it in (/etc/postgresql is postgres's, /etc/redis redis's),
# compares and fixes the current file through a descriptor opened without following links (a
# hard-linked file is replaced, never chowned), and renames the staged file into the directory it
# holds. The copy of what a file replaced is kept in a root-only place until the step's validation
# accepts the new one (ms_validated), never next to the file.
MS_WORK_DIR=/var/lib/matrix-stack
MS_STAGING=""
MS_PREVIOUS_DIR=$MS_WORK_DIR/previous/$MS_STEP
read -r -d '' MS_PLACE_PY <<'PY' || true
import errno, grp, os, pwd, stat, sys

NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


def refuse(message):
    print(f"ms_place: {message}: refused", file=sys.stderr)
    sys.exit(3)


def directory(path, create):
    """An open descriptor of directory PATH, walked from / one component at a time. A symbolic link is
    followed only where root alone can have made it (a root-owned directory nobody else may write)."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    for part in [p for p in path.split("/") if p]:
        if part in (".", ".."):
            refuse(f"{path} has a dot-dot or dot component")
        held = os.fstat(fd)
        trusted = held.st_uid == 0 and not held.st_mode & 0o022
        flags = os.O_RDONLY | os.O_DIRECTORY | (0 if trusted else os.O_NOFOLLOW)
        try:
            inner = os.open(part, flags, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(part, 0o755, dir_fd=fd)
            inner = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                refuse(f"{path}: {part} is a symbolic link or not a directory, in a directory uid {held.st_uid} can change")
            raise
        os.close(fd)
        fd = inner
    return fd


def current(dirfd, name):
    """(descriptor, stat) of the regular, singly linked file NAME, opened without following a link; None
    when there is none (a symbolic link, a device, a hard link are not ours: they are replaced)."""
    try:
        found = os.lstat(name, dir_fd=dirfd)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(found.st_mode):
        refuse(f"{name} is a directory")
    if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
        return None
    try:
        fd = os.open(name, NOFOLLOW, dir_fd=dirfd)
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (found.st_dev, found.st_ino) or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        return None
    return fd, st


def read_all(fd):
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def write_new(dirfd, name, data, mode, uid, gid, staged=None):
    """NAME in DIRFD becomes a new file (a new inode) with DATA: the staged file renamed in when it is on
    the same filesystem, else a fresh file made there (O_EXCL) and written, owned and moded by descriptor."""
    if staged is not None:
        fd = os.open(staged, NOFOLLOW)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.close(fd)
        try:
            os.rename(staged, name, dst_dir_fd=dirfd)
            return
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
    temp = f".{name}.ms-{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dirfd)
    try:
        os.write(fd, data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)


def put(path, mode, owner, group, staged, previous):
    mode, uid, gid = int(mode, 8), pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
    head, name = os.path.split(path)
    dirfd = directory(head, create=True)
    with open(staged, "rb") as f:
        data = f.read()
    found = current(dirfd, name)
    if found is not None:
        fd, st = found
        if read_all(fd) == data:
            if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (mode, uid, gid):
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            os.unlink(staged)
            print("same")
            return
    if previous:
        if os.path.lexists(previous):
            os.unlink(previous)
        if found is not None:
            fd, st = found
            os.lseek(fd, 0, os.SEEK_SET)
            os.makedirs(os.path.dirname(previous), mode=0o700, exist_ok=True)
            keep = os.open(previous, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.write(keep, read_all(fd))
            os.fchown(keep, st.st_uid, st.st_gid)
            os.fchmod(keep, stat.S_IMODE(st.st_mode))
            os.close(keep)
    write_new(dirfd, name, data, mode, uid, gid, staged)
    print("changed")


def restore(path, previous):
    head, name = os.path.split(path)
    dirfd = directory(head, create=False)
    if os.path.lexists(previous):
        st = os.lstat(previous)
        with open(previous, "rb") as f:
            data = f.read()
        write_new(dirfd, name, data, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, previous)
        print("restored")
    else:
        found = os.lstat(name, dir_fd=dirfd)
        if not stat.S_ISDIR(found.st_mode):
            os.unlink(name, dir_fd=dirfd)
        print("removed")


if sys.argv[1] == "put":
    put(*sys.argv[2:8])
elif sys.argv[1] == "restore":
    restore(*sys.argv[2:4])
PY

# ms_place put|restore ARGS...: the placement above (isolated python: no environment, no site packages).
ms_place() {
  python3 -I -S -c "$MS_PLACE_PY" "$@"
}

# Where a file's previous version waits for ms_validated: the step's root-only directory, flat names.
ms_previous_of() {
  printf '%s/%s' "$MS_PREVIOUS_DIR" "${1//\//%}"
}

# A fresh root-only file in the step's staging directory (created on first use, removed at exit).
ms_staged() {
  if [ -z "$MS_STAGING" ]; then
    install -d -m 0700 "$MS_WORK_DIR"
    MS_STAGING=$(mktemp -d "$MS_WORK_DIR/staging.XXXXXX")
  fi
  mktemp "$MS_STAGING/file.XXXXXX"
}

# ms_put_file PATH MODE OWNER GROUP  (base64 content on stdin): a file of this step.
ms_put_file() {
  local path=$1 mode=$2 owner=$3 group=$4 staged result
  staged=$(ms_staged)
  base64 -d > "$staged"
  result=$(ms_place put "$path" "$mode" "$owner" "$group" "$staged" "$(ms_previous_of "$path")")
  if [ "$result" = changed ]; then
    MS_CHANGED_FILES+=("$path")
    ms_log "wrote $path"
  fi
}

# ms_write_file PATH MODE OWNER GROUP  (content on stdin): a file a script writes as root, placed the
# same way; not one of the step's files (ms_validated does not put it back).
ms_write_file() {
  local staged
  staged=$(ms_staged)
  cat > "$staged"
  ms_place put "$1" "$2" "$3" "$4" "$staged" "" >/dev/null
}

# ms_validated CMD...: run the real tool's check of the files this step just wrote. If it rejects
# them, every file this run changed goes back to what it was (or away, if it is new), so a rejected
# config is never left on disk for the next restart or reboot; returns CMD's failure.
ms_validated() {
  local f
  if "$@"; then
    rm -rf "$MS_PREVIOUS_DIR"
    return 0
  fi
  for f in "${MS_CHANGED_FILES[@]}"; do
    if [ "$(ms_place restore "$f" "$(ms_previous_of "$f")")" = restored ]; then
      ms_log "restored the previous $f"
    else
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
  rm -rf "$MS_PREVIOUS_DIR" ${MS_STAGING:+"$MS_STAGING"}
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
# What a step cut off midway left in the staging area (root only) is of no use to the next.
rm -rf "$MS_WORK_DIR"/staging.*
