"""Joining Ray, and a local Ray this process starts: stopped with it, watched while it works.

`connect` joins a cluster or starts a local Ray. A local Ray is stopped when this process ends,
however it ends (a watchdog process waits on a pipe from it), and `RayWatch` ends a run in one
line when its raylet dies. Ray's own prints and log lines stay off stdout and stderr: errors
reach the caller raised.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

from genome_index.config import ray_address
from genome_index.errors import GenomeIndexError

log = logging.getLogger("genome_index")
RAY_MISSING = "--ray needs Ray: pip install 'genome-index[ray]' (or pip install 'ray[data]')"


def connect(address: str = "auto") -> None:
    """Join or start Ray. `auto`: the cluster at RAY_ADDRESS when set, else one started on this
    machine with `ray start`, else a new local Ray with this machine's CPUs and GPUs (Ray's own
    search); any other value is a cluster's address. A Ray already started in this process (a
    notebook, a test) is used as it is."""
    try:
        import ray
    except ImportError:
        raise GenomeIndexError(RAY_MISSING) from None
    if not ray.is_initialized():
        join = ray_address(address)
        if join and not _answers(join):  # Ray itself retries a wrong address for minutes
            raise GenomeIndexError(
                f"cannot reach a Ray cluster at {join}: nothing answers there (start one with `ray start --head`)"
            )
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}  # errors reach us raised
        if not join:
            options["include_dashboard"] = False
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # nor its core's log lines (a user's setting wins)
        _quiet_ray_prints()
        try:
            ray.init(address=join or None, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise GenomeIndexError(f"cannot reach a Ray cluster at {join}: {exc}") from None
        LOCAL_RAY.update(_started_here())
        if LOCAL_RAY:
            _stop_with_this_process(LOCAL_RAY)
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in ("ray", "ray.data"):  # Ray's own progress lines would interleave with ours, and
        logging.getLogger(name).setLevel(logging.CRITICAL)  # its errors reach us raised: said in one line


def _answers(address: str, timeout: float = 5.0) -> bool:
    """Whether something listens at a host:port address (other forms are left to Ray)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return True
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    return True


LOCAL_RAY: dict[str, Any] = {}  # Ray's processes this process started (name -> pid) and its session folder
_KEEP_OPEN: list[int] = []  # the watchdog's pipe: open for as long as this process lives
WATCHDOG = """
import os, signal, sys, time
ended = sys.stdin.buffer.read()  # end of file: the process that started Ray has ended, however it ended
message, session, raylet = sys.argv[1], sys.argv[2], int(sys.argv[3])
targets = {int(pid) for pid in sys.argv[3:]}
def parent(pid):
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
if ended != b"clean" and not alive(raylet):  # Ray's core ended it for its dead raylet, before it could say so
    sys.stderr.write(message + chr(10))
    sys.stderr.flush()
os.close(2)
def in_session(pid):  # Ray's agents rename themselves, but keep their logs open in the session folder
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(session) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False
pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
for pid in pids:
    if in_session(pid):
        targets.add(pid)
grown = True
while grown:
    grown = False
    for pid in pids:
        try:
            if pid not in targets and parent(pid) in targets:
                targets.add(pid)
                grown = True
        except (OSError, ValueError, IndexError):
            pass
targets = {pid for pid in targets if alive(pid)}
for sig, pause in ((signal.SIGTERM, 3.0 if targets else 0.0), (signal.SIGKILL, 0.0)):
    for pid in targets:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    time.sleep(pause)
"""
RAYLET_DIED = (
    "Ray's {process} process on this machine died mid-run, taking the local Ray with it; {committed}: run it "
    "again to add the rest"
)


def _quiet_ray_prints() -> None:
    """Ray's driver prints the errors its cluster publishes (a dead raylet's last log lines) on
    stdout, where results go: they go to this package's debug log instead; the error itself
    reaches the user raised, as one line."""
    from ray._private import worker

    if hasattr(worker, "print_to_stdstream"):
        worker.print_to_stdstream = lambda data, ignore_prefix=False: log.debug("ray: %s", data.get("lines"))


def _started_here() -> dict[str, int]:
    """The Ray processes `ray.init` just started in this process (none when it joined a cluster),
    and its session folder (as `session`)."""
    try:
        from ray._private import worker  # Ray's record of the processes it launched

        node = worker._global_node
        processes = node.all_processes if node is not None else {}
        started = {name: infos[0].process.pid for name, infos in processes.items() if infos}
        return {**started, "session": node.get_session_dir_path()} if started else {}
    except Exception:
        return {}


def _stop_with_this_process(processes: dict[str, Any]) -> None:
    """A watchdog process (in a session of its own) that waits for this one to end, by exit,
    crash or kill -9 (its pipe then closes), and stops the local Ray's processes, their workers
    and agents: they otherwise outlive a killed driver (about 170 MB). Where Ray's core ended
    this process itself, for a raylet that died (it exits at once, before any Python runs), the
    watchdog says so in this process's one line."""
    import atexit
    import subprocess
    import sys

    message = "genome-index: error: " + RAYLET_DIED.format(process="raylet", committed="what was committed stays")
    others = [str(pid) for name, pid in processes.items() if name not in ("session", "raylet")]
    read, write = os.pipe()
    subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, message, str(processes["session"]), str(processes["raylet"]), *others],
        stdin=read, start_new_session=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(read)
    _KEEP_OPEN.append(write)

    def clean_exit() -> None:  # Python ran its exit: any error was said already
        with contextlib.suppress(OSError):
            os.write(write, b"clean")

    atexit.register(clean_exit)


class RayWatch:
    """While a build or embedding runs on a local Ray this process started, checks twice a
    second that Ray's raylet here lives; when it dies, the main thread is interrupted and `lost`
    names it, so the run ends in one line, not in Ray's traceback (where Ray's core ends the
    process first, the watchdog of `_stop_with_this_process` says it instead)."""

    def __init__(self) -> None:
        self.lost: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="genome-index-ray-watch", daemon=True)

    def __enter__(self) -> RayWatch:
        if "raylet" in LOCAL_RAY:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()

    def _run(self) -> None:
        import _thread

        while not self.stop.wait(0.5):
            if not _alive(LOCAL_RAY["raylet"]):
                self.lost = "raylet"
                _thread.interrupt_main()
                return

    def error(self, committed: int) -> GenomeIndexError:
        stays = f"{committed} genome(s) were committed and stay"
        return GenomeIndexError(RAYLET_DIED.format(process=self.lost, committed=stays))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a process that died but was not reaped yet
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
