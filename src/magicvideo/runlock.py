"""One run per run folder: a new run claims its folder atomically before any model loads, and
every run (new or resumed) holds an exclusive lock on it until it ends.

The claim is a marker file created with O_EXCL, so of two runs started on one `--out` at the
same moment exactly one wins and the other fails at once, touching nothing; the lock is
`flock` on that marker, so a resume cannot run beside another run of the same folder. The
kernel drops the lock when the process dies, so a killed run never leaves its folder locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

MARKER = ".run.lock"


class RunLock:
    def __init__(self, run_dir: Path, fd: int, created_dir: bool) -> None:
        self.run_dir, self._fd, self._created_dir = run_dir, fd, created_dir

    @classmethod
    def claim(cls, run_dir: str | os.PathLike) -> RunLock:
        """Make a new or empty `run_dir` this run's; FileExistsError if it is a file, not empty,
        or claimed by another run."""
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise FileExistsError(f"{run_dir} is a file; --out names a run folder")
        if run_dir.is_dir() and any(run_dir.iterdir()):
            raise FileExistsError(f"{run_dir} is not empty; pass another --out, or --resume {run_dir}")
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(run_dir / MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise FileExistsError(f"{run_dir} was just claimed by another run; pass another --out") from None
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours alone: nobody else could have opened a file made with O_EXCL
        return cls(run_dir, fd, created)

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike) -> RunLock:
        """Lock an existing run folder (to resume it); FileExistsError if another run holds it."""
        run_dir = Path(run_dir)
        fd = os.open(run_dir / MARKER, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FileExistsError(f"{run_dir} is in use by another run; wait for it to end") from None
        return cls(run_dir, fd, False)

    def release(self, abandon: bool = False) -> None:
        """Unlock. With `abandon` (the run failed before writing anything), also take the claim
        back, and the folder if the claim made it: the folder is as it was before."""
        if self._fd < 0:
            return
        if abandon:
            (self.run_dir / MARKER).unlink(missing_ok=True)
            if self._created_dir and not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()
        os.close(self._fd)  # closing drops the flock
        self._fd = -1
