#!/usr/bin/env bash
# Clones on PostgreSQL 18 with reflink (issue #12 goal 6): raw
# CREATE DATABASE … TEMPLATE time per relation with STRATEGY = FILE_COPY and
# file_copy_method = clone on XFS (reflink=1, on a loop device), against
# FILE_COPY + copy and WAL_LOG on 18, and PostgreSQL 15's WAL_LOG and
# FILE_COPY, on XFS and on the usual disk. Not a test: it never fails on a
# slow result.
#
#   scripts/bench_reflink.sh [--tables 500,2000] [--runs N] [--image-size 8G]
#                            [--durability "fsync off,fsync on"] [--data-mib N]
#
#   --tables LIST     schema widths, tables with 2 indexes each (default 500,2000)
#   --runs N          runs per case, medians reported (default 3)
#   --image-size S    size of the sparse XFS image file (default 8G)
#   --durability L    "fsync off" (migsnap's embedded server), "fsync on"
#                     (server defaults), or both (default)
#   --data-mib N      instead of the wide schemas, a template of one table of
#                     about N MiB: where copying bytes, not creating files, is
#                     the cost (each clone dropped right after it is timed)
#
# Needs root (loop device, mount) and a user `postgres` to run the servers.
# PostgreSQL 18 comes from scripts/pg_major.sh 18, 15 from PG15_BINDIR
# (default /usr/lib/postgresql/15/bin). Everything lives under one temp dir
# in /var/tmp (the ext4 clusters, the XFS image and its mount point) and is
# removed at the end: servers stopped, unmounted, loop device detached.
# The report (Markdown) goes to stdout, progress to stderr.
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"
cd "$root"

die() { echo "bench_reflink: error: $1" >&2; [ -z "${2:-}" ] || echo "hint: $2" >&2; exit 2; }

tables=500,2000 runs=3 image_size=8G durability="fsync off,fsync on" data_mib=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tables) tables=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --image-size) image_size=$2; shift 2 ;;
    --durability) durability=$2; shift 2 ;;
    --data-mib) data_mib=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option $1" "scripts/bench_reflink.sh --help" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "needs root (loop device, mkfs.xfs, mount)" "run it as root, e.g. sudo scripts/bench_reflink.sh"
id postgres >/dev/null 2>&1 || die "no user \`postgres\` to run the servers" "useradd --system postgres"
command -v mkfs.xfs >/dev/null || die "mkfs.xfs not found" "apt-get install -y xfsprogs"
command -v losetup >/dev/null || die "losetup not found" "apt-get install -y mount"
[ -e /dev/loop-control ] || die "no /dev/loop-control: this kernel or container has no loop devices" \
  "run on a machine (or a privileged container) with the loop module loaded"
pg15=${PG15_BINDIR:-/usr/lib/postgresql/15/bin}
[ -x "$pg15/initdb" ] || die "PostgreSQL 15 not found in $pg15" "apt-get install postgresql-15, or set PG15_BINDIR"
pg18=$(scripts/pg_major.sh 18)

base=$(mktemp -d /var/tmp/migsnap-reflink.XXXXXX)
chmod 755 "$base"
mnt=$base/xfs loopdev='' started=()
cleanup() {
  local d
  for d in "${started[@]}"; do
    runuser -u postgres -- "${d%%=*}/pg_ctl" -D "${d#*=}" stop -m fast >/dev/null 2>&1 || true
  done
  if mountpoint -q "$mnt"; then umount "$mnt" || echo "bench_reflink: warning: cannot unmount $mnt" >&2; fi
  if [ -n "$loopdev" ]; then losetup -d "$loopdev" || echo "bench_reflink: warning: cannot detach $loopdev" >&2; fi
  rm -rf "$base"
}
trap cleanup EXIT

truncate -s "$image_size" "$base/xfs.img"
mkfs.xfs -q -m reflink=1 "$base/xfs.img"
out=$(losetup --find --show "$base/xfs.img" 2>&1) || die "losetup failed: $(tail -n 1 <<<"$out")" \
  "free a loop device (losetup -a) or load the loop module"
loopdev=$out
mkdir "$mnt"
out=$(mount "$loopdev" "$mnt" 2>&1) || die "mount of the XFS image failed: $(tail -n 1 <<<"$out")" \
  "this needs CAP_SYS_ADMIN and XFS in the kernel"
mkdir "$base/ext4" "$base/sock"
chown postgres "$mnt" "$base/ext4" "$base/sock"

# name port bindir datadir
clusters=(
  "pg18-xfs 5581 $pg18 $mnt/pg18"
  "pg15-xfs 5582 $pg15 $mnt/pg15"
  "pg15-ext4 5583 $pg15 $base/ext4/pg15"
  "pg18-ext4 5584 $pg18 $base/ext4/pg18"
)
args=()
for c in "${clusters[@]}"; do
  read -r name port bindir data <<<"$c"
  echo "bench_reflink: initdb $name ($("$bindir/postgres" --version))" >&2
  runuser -u postgres -- "$bindir/initdb" -D "$data" -A trust -U postgres --no-sync >/dev/null
  cat >>"$data/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$base/sock'
max_connections = 20
max_locks_per_transaction = 256
shared_buffers = 128MB
log_checkpoints = off
EOF
  runuser -u postgres -- "$bindir/pg_ctl" -D "$data" -l "$data/../$name.log" start -w >/dev/null
  started+=("$bindir=$data")
  args+=(--cluster "$name=$port=$bindir=$data")
done
export PGHOST=$base/sock PGUSER=postgres
unset PGSERVICE PGSERVICEFILE PGOPTIONS PGDATABASE PGPORT

echo "Machine: $(uname -r), $(nproc) cores, $(mkfs.xfs -V), XFS image $image_size on $loopdev" \
  "over $(df --output=fstype /var/tmp | tail -n 1) ($(xfs_info "$mnt" | grep -o 'reflink=[01]'));" \
  "PostgreSQL $("$pg18/postgres" --version | awk '{print $3}') and $("$pg15/postgres" --version | awk '{print $3}')."
echo
python3 scripts/bench_reflink.py "${args[@]}" --tables "$tables" --runs "$runs" --durability "$durability" \
  --data-mib "$data_mib"
