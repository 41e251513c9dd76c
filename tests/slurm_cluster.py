"""A single-node SLURM cluster for tests: munged, slurmctld and slurmd started as root daemons from a temp folder.

Debian's packages (`apt-get install slurmctld slurmd slurm-client munge`, installed by .ci/run) provide the programs;
everything else is generated here, under one folder, so that nothing of the machine's own configuration is used or
changed: a munge key and socket, `slurm.conf` and `gres.conf` sized from this machine (the CPUs this process may use,
90% of its memory, `GPUS` GPUs declared as GRES on placeholder character devices, so that SLURM allocates them and sets
CUDA_VISIBLE_DEVICES) and one partition. No accounting database (`accounting_storage/none`), as on many small
clusters: `sacct` does not work, which is what the profile's `slurm-status-command: squeue` is for (docs/slurm.md).

Clients (`sinfo`, `sbatch`, Snakemake's SLURM executor) find the cluster through `SLURM_CONF` in `Cluster.env()`, job
steps through the `/etc/slurm/slurm.conf` link (`SYSTEM_CONF`), the one change outside the temp folder, made only where
the machine has no slurm.conf of its own and removed by `stop()`.
`start_cluster` raises `ClusterUnavailable` with the reason when SLURM cannot start here (not root, packages missing,
a daemon that dies or a node that never becomes idle); the test decides whether that skips or fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The Debian packages that provide the programs below (the install line of .ci/run).
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
PROGRAMS = ("munged", "slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "srun", "scancel", "scontrol")
#: Where SLURM's commands look for the configuration when SLURM_CONF is not set. Job steps must find it there:
#: snakemake-executor-plugin-slurm-jobstep removes SLURM_* variables (SLURM_CONF too) from the environment of the
#: `srun` it starts, so the test cluster links its slurm.conf here (only where the machine has none of its own).
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
#: Marks a configuration folder as a test cluster's (a stale /etc/slurm/slurm.conf link to it may be removed).
MARKER = "harness-test-cluster"
#: GPUs the node declares (GRES on placeholder devices; no real device behind them).
GPUS = 2
#: Character devices that stand in for GPU device files (SLURM checks the type; nothing opens them).
PLACEHOLDER_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random")
PARTITION = "main"
CLUSTER = "harness"


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be started on this machine; the message says why."""


@dataclass
class Cluster:
    """A running single-node cluster (see the module docstring). `stop()` ends the daemons it started."""

    root: Path
    node: str
    cpus: int
    memory_mb: int
    gpus: int = GPUS
    partition: str = PARTITION
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) with `SLURM_CONF` pointing at this cluster."""
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        res = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def node_state(self) -> str:
        res = self.run("sinfo", "--noheader", "--Node", "--format=%T", "--nodes", self.node, check=False)
        return res.stdout.strip() if res.returncode == 0 else f"sinfo failed: {res.stderr.strip()}"

    def jobs(self) -> list[dict[str, str]]:
        """The jobs slurmctld still knows (running, pending and recently finished): id, name, state, comment."""
        res = self.run("squeue", "--noheader", "--states=all", "--format=%i|%j|%T|%k")
        keys = ("id", "name", "state", "comment")
        return [dict(zip(keys, line.split("|", 3), strict=True)) for line in res.stdout.splitlines() if line.strip()]

    def logs(self, lines: int = 40) -> str:
        """The tail of each daemon's log (for a failure message)."""
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            path = self.root / "log" / f"{name}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
            parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this object started (slurmd, slurmctld, munged, in that order)."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", "root", check=False)
            self.run("scancel", "--user", "root", check=False)
        if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.resolve() == self.conf.resolve():
            SYSTEM_CONF.unlink()
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def machine_memory_mb() -> int:
    """MemTotal of /proc/meminfo in MB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterUnavailable("no MemTotal in /proc/meminfo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def release_stale_link() -> None:
    """Remove the /etc/slurm/slurm.conf link of a test cluster whose session was killed (its configuration gone, or
    its slurmctld no longer running); a link of a running test cluster or the machine's own file stay."""
    if not SYSTEM_CONF.is_symlink():
        return
    target = SYSTEM_CONF.resolve()
    if not (target.parent / MARKER).exists():
        if not target.exists():
            SYSTEM_CONF.unlink()  # dangling: nothing reads it
        return
    pid_file = target.parent.parent / "state" / "slurmctld.pid"
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        SYSTEM_CONF.unlink()


def write_config(root: Path, node: str, cpus: int, memory_mb: int, gpus: int = GPUS) -> Path:
    """slurm.conf, gres.conf and an empty plugstack.conf under `root/etc`; state, spool and logs under `root`."""
    etc, state, log = root / "etc", root / "state", root / "log"
    for folder in (etc, state / "ctld", state / "d", log, root / "gpu"):
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(gpus):  # placeholder devices: SLURM wants character devices; it only counts them here
        link = root / "gpu" / f"gpu{i}"
        link.unlink(missing_ok=True)
        link.symlink_to(PLACEHOLDER_DEVICES[i % len(PLACEHOLDER_DEVICES)])
    lines = {
        "ClusterName": CLUSTER,
        "SlurmctldHost": f"{node}(127.0.0.1)",
        "SlurmctldPort": free_port(),
        "SlurmdPort": free_port(),
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={root / 'munge' / 'munge.socket'}",
        "StateSaveLocation": state / "ctld",
        "SlurmdSpoolDir": state / "d",
        "SlurmctldPidFile": state / "slurmctld.pid",
        "SlurmdPidFile": state / "slurmd.pid",
        "SlurmctldLogFile": log / "slurmctld.log",
        "SlurmdLogFile": log / "slurmd.log",
        "PlugStackConfig": etc / "plugstack.conf",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "SwitchType": "switch/none",
        "MpiDefault": "none",
        "SchedulerType": "sched/backfill",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",
        "AccountingStorageType": "accounting_storage/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "JobCompType": "jobcomp/none",
        "GresTypes": "gpu",
        "ReturnToService": 2,
        # finished jobs stay visible to squeue for an hour (default 300 s; the squeue status command needs >= 3 x the
        # first status check's delay, and the test reads the jobs' states after the run)
        "MinJobAge": 3600,
        "KillWait": 30,
        "SlurmctldTimeout": 30,
        "SlurmdTimeout": 30,
        "InactiveLimit": 0,
        "SlurmctldDebug": "info",
        "SlurmdDebug": "info",
    }
    text = "".join(f"{key}={value}\n" for key, value in lines.items())
    text += (
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{gpus} State=UNKNOWN\n"
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP\n"
    )
    (etc / "slurm.conf").write_text(text)
    gpu_files = f"{root / 'gpu'}/gpu[0-{gpus - 1}]" if gpus > 1 else f"{root / 'gpu'}/gpu0"
    (etc / "gres.conf").write_text(f"NodeName={node} Name=gpu File={gpu_files}\n")
    (etc / "plugstack.conf").write_text("")
    (etc / MARKER).write_text("a test cluster of tests/slurm_cluster.py\n")
    return etc / "slurm.conf"


def start_munge(root: Path) -> subprocess.Popen:
    """munged in the foreground with its own key and socket under `root/munge` (the daemon wants 0700 folders)."""
    folder = root / "munge"
    folder.mkdir(mode=0o700, exist_ok=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    cmd = [
        program("munged"),
        "--foreground",
        "--force",
        f"--key-file={key}",
        f"--socket={folder / 'munge.socket'}",
        f"--pid-file={folder / 'munged.pid'}",
        f"--seed-file={folder / 'munged.seed'}",
        f"--log-file={root / 'log' / 'munged.log'}",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def start_cluster(root: Path, timeout: float = 60) -> Cluster:
    """Start a single-node cluster under `root` and wait until its node is idle.

    Raises ClusterUnavailable (with what is missing or the daemons' logs) when it cannot; whatever was started is
    stopped again first.
    """
    if os.geteuid() != 0:
        raise ClusterUnavailable("the test cluster's daemons run as root (run the tests as root, as CI does)")
    missing = missing_programs()
    if missing:
        raise ClusterUnavailable(
            f"SLURM programs not found: {', '.join(missing)} (Debian: apt-get install "
            f"{' '.join(PACKAGES)}; .ci/run installs them in CI)"
        )
    release_stale_link()
    if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
        raise ClusterUnavailable(
            f"this machine has its own {SYSTEM_CONF} (or another test cluster runs); the test "
            "cluster does not replace it"
        )
    root.mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    cpus = len(os.sched_getaffinity(0))  # the CPUs this process may use (a container's, not the host's)
    memory_mb = int(machine_memory_mb() * 0.9)
    (root / "log").mkdir(exist_ok=True)
    cluster = Cluster(root=root, node=node, cpus=cpus, memory_mb=memory_mb)
    try:
        cluster.processes["munged"] = start_munge(root)
        socket_path = root / "munge" / "munge.socket"
        if not _wait(lambda: socket_path.exists() or cluster.processes["munged"].poll() is not None, 15):
            raise ClusterUnavailable("munged did not create its socket within 15 s")
        if cluster.processes["munged"].poll() is not None:
            raise ClusterUnavailable("munged exited at start")
        conf = write_config(root, node, cpus, memory_mb)
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(conf)
        env = cluster.env()
        for name, args in (("slurmctld", ["-D", "-i"]), ("slurmd", ["-D", "-N", node])):
            cmd = [program(name), *args, "-f", str(conf)]
            cluster.processes[name] = subprocess.Popen(
                cmd,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(root / "log" / f"{name}.stderr", "w"),  # noqa: SIM115
                start_new_session=True,
            )

        def idle() -> bool:
            for name, proc in cluster.processes.items():
                if proc.poll() is not None:
                    raise ClusterUnavailable(f"{name} exited ({proc.returncode})")
            return cluster.node_state() == "idle"

        if not _wait(idle, timeout, interval=0.5):
            raise ClusterUnavailable(f"node {node} not idle within {timeout:.0f} s (state: {cluster.node_state()})")
    except ClusterUnavailable as err:
        logs = cluster.logs()
        cluster.stop()
        raise ClusterUnavailable(f"{err}\n{logs}") from None
    except BaseException:
        cluster.stop()
        raise
    return cluster
