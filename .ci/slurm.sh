#!/usr/bin/env bash
# A real one-node SLURM cluster (Debian's packages: munge, slurmctld, slurmd, slurmdbd on MariaDB)
# on this machine, then the SLURM tests (tests/test_slurm.py) through profiles/slurm, then teardown.
# Needs root and apt (CI). Daemons are started by hand (no systemd); all their state lives in one temp
# folder. The config must sit at /etc/slurm/slurm.conf: the executor plugin drops SLURM_CONF inside jobs.
# Everything is undone on exit, failure included.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PY:-$REPO/.venv/bin/python}

[[ $(id -u) == 0 ]] || { echo "slurm.sh: needs root (installs packages, runs daemons)" >&2; exit 1; }
for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf /etc/slurm/gres.conf; do
  [[ ! -e $f ]] || { echo "slurm.sh: $f exists; not overwriting another cluster's config" >&2; exit 1; }
done

t0=$SECONDS
pkgs=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
if ! dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get install -y -q "${pkgs[@]}" >/dev/null ||
    { timeout 300 apt-get update -q >/dev/null && timeout 600 apt-get install -y -q "${pkgs[@]}" >/dev/null; }
fi
echo "slurm.sh: packages ready after $((SECONDS - t0)) s"

STATE=$(mktemp -d /tmp/lcopt-slurm.XXXXXX)
chmod 755 "$STATE"
MUNGE_SOCKET=$STATE/munge/munge.socket.2
NODE=$(hostname -s)
# Ports off the defaults, so a real SLURM or MySQL elsewhere on the machine is left alone.
CTLD_PORT=16817 SLURMD_PORT=16818 DBD_PORT=16819 DB_PORT=13306

cleanup() {
  local rc=$?
  set +e
  if ((rc != 0)); then
    for log in "$STATE"/log/*.log; do [[ -e $log ]] || continue; echo "--- $log"; tail -n 30 "$log"; done
  fi
  # this private cluster's jobs only: none may outlive it
  if [[ -e /etc/slurm/slurm.conf ]] && timeout 10 scancel --full --user=root 2>/dev/null; then
    for _ in $(seq 50); do [[ -z $(timeout 10 squeue -h 2>/dev/null) ]] && break; sleep 0.2; done
  fi
  for pidfile in slurmd slurmctld slurmdbd mariadb munged; do
    pidfile=$STATE/run/$pidfile.pid
    [[ -s $pidfile ]] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
  done
  rm -f /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf /etc/slurm/gres.conf
  rm -rf "$STATE"
  echo "slurm.sh: cluster stopped, state removed (exit $rc, $((SECONDS - t0)) s in all)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$STATE"/{munge,run,log,ctld,slurmd,mysql}
chown munge:munge "$STATE/munge"

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2
  shift 2
  for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "slurm.sh: $what not ready after $limit s" >&2
  return 1
}

# munge: the key comes with the package; the socket folder must belong to munge, mode 755.
[[ -s /etc/munge/munge.key ]] || timeout 30 mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --pid-file="$STATE/munge/munged.pid" \
  --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/seed"
ln -s "$STATE/munge/munged.pid" "$STATE/run/munged.pid"
ln -s "$STATE/munge/munged.log" "$STATE/log/munged.log"
wait_for 10 munge bash -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"

# MariaDB on loopback for slurmdbd.
chown mysql:mysql "$STATE/mysql"
timeout 120 mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
  >"$STATE/log/mariadb-install.log" 2>&1
runuser -u mysql -- mariadbd --datadir="$STATE/mysql" --socket="$STATE/mysql/mysql.sock" \
  --bind-address=127.0.0.1 --port=$DB_PORT --pid-file="$STATE/mysql/mariadb.pid" \
  --log-error="$STATE/mysql/mariadb.log" --skip-log-bin &
ln -s "$STATE/mysql/mariadb.pid" "$STATE/run/mariadb.pid"
ln -s "$STATE/mysql/mariadb.log" "$STATE/log/mariadb.log"
wait_for 60 MariaDB mariadb --socket="$STATE/mysql/mysql.sock" -e "select 1"
mariadb --socket="$STATE/mysql/mysql.sock" <<SQL
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'lcopt-ci';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=lcopt-ci
StorageLoc=slurm_acct_db
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
chmod 600 /etc/slurm/slurmdbd.conf

# One node; it advertises 256 GB and 4 GPUs (SlurmdParameters=config_overrides, a gres without
# real devices) so that the profile's paper-sized requests are scheduled unchanged. Nothing enforces
# memory here (task/none, proctrack/linuxproc: no cgroups in a container).
cat >/etc/slurm/slurm.conf <<EOF
ClusterName=lcopt-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
MinJobAge=600
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=256000 Gres=gpu:4 State=UNKNOWN
PartitionName=ci Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
# slurmd drops a GPU gres without device files: four stand-ins (character devices like /dev/null).
mkdir "$STATE/dev"
for i in 0 1 2 3; do mknod "$STATE/dev/fakegpu$i" c 1 3; done
echo "NodeName=$NODE Name=gpu File=$STATE/dev/fakegpu[0-3]" >/etc/slurm/gres.conf

slurmdbd
wait_for 60 slurmdbd timeout 10 sacctmgr -n list cluster
timeout 30 sacctmgr -i add cluster lcopt-ci >/dev/null
timeout 30 sacctmgr -i add account lcopt Description=ci Organization=ci >/dev/null
timeout 30 sacctmgr -i add user root DefaultAccount=lcopt >/dev/null
slurmctld
wait_for 60 slurmctld timeout 10 scontrol ping
slurmd
wait_for 60 "node $NODE" bash -c "sinfo -h -N -o %t | grep -qx idle"
echo "slurm.sh: cluster up after $((SECONDS - t0)) s"
sinfo -N -l

t_tests=$SECONDS
LCOPT_SLURM=1 timeout 1800 "$PY" -m pytest -q -ra -p no:cacheprovider tests/test_slurm.py
echo "slurm.sh: SLURM tests took $((SECONDS - t_tests)) s"
echo "slurm.sh: every SLURM job of this run (sacct):"
sacct -a -X -o JobID,JobName%12,Comment%60,State,ExitCode,Elapsed,ReqMem,AllocTRES%40
