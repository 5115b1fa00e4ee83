"""A real single-node SLURM on this machine (Debian's slurm-wlm + munge, as root, no systemd), for the cluster
tests and bench/bench_scale.py: `ensure()` installs it if needed, writes its config, starts munged, slurmctld
and slurmd when they are not running, and waits until the node takes jobs. As a script: start it."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
# Snakemake's slurm executor on this cluster: no accounting database (squeue instead of sacct), no account, and
# the first status check soon after submitting (tests; the profile waits longer).
EXECUTOR_ARGS = ["--executor", "slurm", "--slurm-status-command", "squeue", "--slurm-no-account",
                 "--slurm-init-seconds-before-status-checks", "1", "--default-resources", "slurm_partition=debug",
                 "--latency-wait", "5"]

CONF = """ClusterName=test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
MinJobAge=300
NodeName={host} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def why_not() -> str | None:
    """Why no cluster can be started here (None: it can)."""
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd needs root"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "no slurm-wlm and no apt-get to install it"
    return None


def node_idle() -> bool:
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return proc.returncode == 0 and proc.stdout.strip() in ("idle", "mixed", "allocated")


def ensure(timeout: float = 60) -> None:
    if shutil.which("slurmctld") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], check=True,
                       stdout=subprocess.DEVNULL)
    if shutil.which("sinfo") and node_idle():
        return
    if not MUNGE_KEY.exists() or MUNGE_KEY.stat().st_size < 32:
        MUNGE_KEY.write_bytes(secrets.token_bytes(1024))
    shutil.chown(MUNGE_KEY, "munge", "munge")
    MUNGE_KEY.chmod(0o400)
    for folder in ("/run/munge", "/var/spool/slurmctld", "/var/spool/slurmd", "/var/log/slurm"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    host = socket.gethostname().split(".")[0]
    memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    SLURM_CONF.write_text(CONF.format(host=host, cpus=os.cpu_count(), memory=memory))
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode:
        subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
    for daemon in ("slurmctld", "slurmd"):
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode:
            subprocess.run([daemon], check=True)
    deadline = time.monotonic() + timeout
    while not node_idle():
        if time.monotonic() > deadline:
            raise RuntimeError("the SLURM node did not come up: " + subprocess.run(
                ["sinfo"], capture_output=True, text=True).stdout)
        time.sleep(1)


if __name__ == "__main__":
    ensure()
    print(subprocess.run(["sinfo"], capture_output=True, text=True).stdout, end="")
