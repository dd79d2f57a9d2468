"""What the autoscaler keeps on disk, in autoscale_state_dir:

  lock          flock'ed by the one autoscaler that may act; holds its pid
  state.json    the pool hosts in service and since when, the recent recommendations
  journal.json  the action in progress (written before it starts, removed after
                state.json records its result): a run that finds it finishes or
                rolls back that action before anything else

Every write is a new file renamed over the old one, after fsync: a crash leaves
the old content or the new one, never half of it.
"""

import fcntl
import json
import os
from pathlib import Path


class LockBusy(Exception):
    pass


class Lock:
    """An exclusive flock on state_dir/lock for the life of the process: the kernel
    releases it when the process ends, however it ends."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "lock"
        self.fd = None

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockBusy(f"another autoscaler (pid {holder}) holds {self.path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self


def write_atomically(path: Path, data) -> None:
    temporary = path.with_name(path.name + ".new")
    with open(temporary, "w") as file:
        json.dump(data, file, indent=1, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir)
        self.state_path = self.dir / "state.json"
        self.journal_path = self.dir / "journal.json"

    def load(self) -> dict:
        """{"pool_in_service": {host: since}, "history": [[time, recommendation], ...]}"""
        if not self.state_path.exists():
            return {"pool_in_service": {}, "history": []}
        return json.loads(self.state_path.read_text())

    def save(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.state_path, state)

    def pending(self) -> dict | None:
        if not self.journal_path.exists():
            return None
        return json.loads(self.journal_path.read_text())

    def begin(self, action: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.journal_path, action)

    def end(self) -> None:
        self.journal_path.unlink()
        sync_directory(self.dir)
