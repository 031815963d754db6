"""A private single-node SLURM on this machine: for the tests, and for trying the SLURM launcher
on a laptop (as root, Debian/Ubuntu)::

    sudo .venv/bin/python tests/slurm_cluster.py start /tmp/kdlab-slurm   # prints SLURM_CONF=…
    export SLURM_CONF=/tmp/kdlab-slurm/slurm.conf
    python -m kdlab.train +experiment=baseline_cnn ... hydra/launcher=slurm \\
        hydra.launcher.partition=debug hydra.launcher.gpus_per_node=0 -m seed=0,1
    sudo .venv/bin/python tests/slurm_cluster.py stop /tmp/kdlab-slurm

It installs Debian's ``slurmctld slurmd slurm-client munge`` when ``slurmctld`` is missing (root
and apt-get needed), writes a ``slurm.conf`` for this host (its CPUs and memory, partition
``debug``) that works in a container (no cgroups: ``proctrack/linuxproc``, ``task/none``, no
accounting), starts munged, slurmctld and slurmd in the background with their state and logs in
one folder, on free ports, and waits until ``sinfo`` shows the node idle. Fast settings for
tests: ``KillWait=5``, ``MinJobAge=30``, a requeued job may start again after 11 s instead of 121
(``cred_expire=10``), the scheduler looks every 2 s.

``slurm_cluster`` (session fixture) yields a :class:`Cluster`, or skips with the reason (not
root, no apt, the daemons' log tail when they do not come up); it cancels leftover jobs and
stops the daemons at the end. Tests that use it are marked ``@pytest.mark.slurm``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order


class Unavailable(RuntimeError):
    """SLURM cannot run here (the message says why)."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def install() -> None:
    """Install the Debian packages when ``slurmctld`` is missing (root + apt-get only)."""
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged"):
        return
    if os.geteuid() != 0:
        raise Unavailable("SLURM is not installed and installing it needs root")
    if not shutil.which("apt-get"):
        raise Unavailable("SLURM is not installed and there is no apt-get to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", *PACKAGES]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:  # stale package lists: update once, then try again
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=900)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not shutil.which("slurmctld"):
        raise Unavailable(f"apt-get install {' '.join(PACKAGES)} failed: {proc.stderr[-500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hardware(host: str) -> str:
    """This node's line for slurm.conf (CPUs, sockets, cores, memory), from ``slurmd -C``."""
    try:
        out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
        hw = re.search(r"CPUs=\d+.*?RealMemory=\d+", out)
    except (OSError, subprocess.TimeoutExpired):
        hw = None
    if hw is not None:
        return hw.group(0)
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return f"CPUs={os.cpu_count()} RealMemory={mem_kb // 1024}"


def write_conf(root: Path, host: str) -> Path:
    """slurm.conf + a munge key under ``root``; everything SLURM writes stays in ``root``."""
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = root / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
    conf = root / "slurm.conf"
    conf.write_text(
        f"""# kdlab's test cluster: one node, no cgroups, no accounting (tests/slurm_cluster.py)
ClusterName=kdlabtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (+1 s)
AuthInfo=socket={root}/munge.sock,cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# a container without usable cgroups: track processes by parent pid, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=30
OverTimeLimit=0
MessageTimeout=10
InactiveLimit=0
Waittime=0
NodeName={host} NodeAddr=127.0.0.1 {_hardware(host)} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )
    return conf


@dataclass
class Cluster:
    """A running test cluster: ``env()`` for the commands that talk to it."""

    root: Path
    host: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in (os.environ if base is None else base).items()
            if not k.startswith("SLURM_")
        }
        return env | {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, env=self.env(), capture_output=True, text=True, timeout=60, check=check
        )

    def jobs(self) -> dict[str, str]:
        """``{"12_0": "RUNNING", …}`` for every job SLURM still lists."""
        out = self.run("squeue", "-h", "-r", "-o", "%i|%T").stdout
        return dict(line.split("|", 1) for line in out.split() if "|" in line)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{_tail(self.root / f'{name}.log')}"
            for name in ("slurmctld", "slurmd", "munged")
        )

    def stop(self) -> None:
        """Cancel every job, wait for them to end, stop the daemons."""
        stop(self.root, self.procs)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop(root: Path, procs: dict[str, subprocess.Popen] | None = None) -> None:
    """Cancel the cluster's jobs, then end its daemons (by their pids, nothing else)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_CONF"] = str(root / "slurm.conf")
    try:
        ids = subprocess.run(
            ["squeue", "-h", "-o", "%A"], env=env, capture_output=True, text=True, timeout=30
        ).stdout.split()
        if ids:
            subprocess.run(["scancel", *ids], env=env, capture_output=True, timeout=30)
            deadline = time.time() + 30
            while (
                time.time() < deadline
                and subprocess.run(
                    ["squeue", "-h"], env=env, capture_output=True, text=True, timeout=30
                ).stdout.strip()
            ):
                time.sleep(1)
    except (OSError, subprocess.TimeoutExpired):
        pass
    procs = procs or {}
    for name in DAEMONS:
        proc = procs.get(name)
        pid = proc.pid if proc is not None else None
        if pid is None:
            try:
                pid = int((root / f"{name}.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        if not _alive(pid):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 15
        while time.time() < deadline and (proc.poll() is None if proc else _alive(pid)):
            time.sleep(0.2)
        if proc.poll() is None if proc else _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=10)


def start(root: Path, timeout: float = 60) -> Cluster:
    """Install if needed, configure and start the daemons, wait for an idle node."""
    if sys.platform != "linux":
        raise Unavailable("the test cluster needs Linux")
    if os.geteuid() != 0:
        raise Unavailable("starting slurmctld/slurmd/munged needs root")
    install()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    conf = write_conf(root, host)
    cluster = Cluster(root, host)
    env = cluster.env()

    def launch(name: str, cmd: list[str]) -> None:
        out = open(root / f"{name}.out", "w")  # noqa: SIM115 (the daemon keeps it)
        cluster.procs[name] = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    try:
        launch(
            "munged",
            [
                "munged",
                "-F",
                "--force",
                f"--socket={root}/munge.sock",
                f"--key-file={root}/munge.key",
                f"--pid-file={root}/munged.pid",
                f"--log-file={root}/munged.log",
                f"--seed-file={root}/munged.seed",
            ],
        )
        _wait(lambda: (root / "munge.sock").exists(), 15, cluster, "munged")
        launch("slurmctld", ["slurmctld", "-D", "-c", "-f", str(conf)])
        time.sleep(1)
        launch("slurmd", ["slurmd", "-D", "-f", str(conf)])
        _wait(
            lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T").stdout,
            timeout,
            cluster,
            "the idle node",
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ready, timeout: float, cluster: Cluster, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        dead = [n for n, p in cluster.procs.items() if p.poll() is not None]
        if dead:
            out = "\n".join(_tail(cluster.root / f"{n}.out") for n in dead)
            raise Unavailable(f"{', '.join(dead)} exited ({out})\n{cluster.logs()}")
        time.sleep(0.5)
    raise Unavailable(f"waited {timeout:.0f} s for {what}\n{cluster.logs()}")


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture(tmp_path_factory):
    """A running single-node SLURM (partition ``debug``), or a skip that says why not."""
    # a short path: munge's socket path must fit in a sockaddr_un
    root = Path(tmp_path_factory.mktemp("slurm"))
    try:
        cluster = start(root)
    except Unavailable as err:
        pytest.skip(f"no SLURM here: {str(err)[-3000:]}")
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/slurm_cluster.py start|stop DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    if argv[0] == "stop":
        stop(root)
        return 0
    try:
        cluster = start(root)
    except Unavailable as err:
        print(f"SLURM could not start: {err}", file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={cluster.conf}   # then sinfo, sbatch, python -m kdlab.train ... -m")
    print(f"stop it with: python {__file__} stop {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
