"""One run per run folder: the claim is atomic, the lock is exclusive, a failed start leaves the
folder as it was."""

import subprocess
import sys

import pytest

from magicvideo.runlock import MARKER, RunLock


def test_a_folder_is_claimed_once_and_locked_while_its_run_lasts(tmp_path):
    run = tmp_path / "run"
    lock = RunLock.claim(run)
    assert (run / MARKER).is_file()
    with pytest.raises(FileExistsError, match="not empty"):
        RunLock.claim(run)  # the marker alone makes the folder someone's
    (run / MARKER).unlink()  # even if the marker went: the O_EXCL create still decides only once
    lock.release()
    (run / MARKER).touch()
    with pytest.raises(FileExistsError, match="not empty"):
        RunLock.claim(run)
    held = RunLock.acquire(run)
    with pytest.raises(FileExistsError, match="in use by another run"):
        RunLock.acquire(run)
    # another process sees the lock too, and gets it once the holder lets go
    probe = ("import sys; from magicvideo.runlock import RunLock\n"
             "try:\n    RunLock.acquire(sys.argv[1])\nexcept FileExistsError:\n    sys.exit(3)\n")
    assert subprocess.run([sys.executable, "-c", probe, str(run)]).returncode == 3
    held.release()
    assert subprocess.run([sys.executable, "-c", probe, str(run)]).returncode == 0


def test_a_race_between_two_claims_has_one_winner(tmp_path, monkeypatch):
    import os

    run = tmp_path / "run"
    run.mkdir()
    real_open = os.open

    def rival_first(path, flags, *mode):  # the other run creates its marker between our check and ours
        if str(path).endswith(MARKER) and flags & os.O_EXCL and not (run / MARKER).exists():
            os.close(real_open(path, os.O_CREAT | os.O_WRONLY))
        return real_open(path, flags, *mode)

    monkeypatch.setattr(os, "open", rival_first)
    with pytest.raises(FileExistsError, match="just claimed by another run"):
        RunLock.claim(run)


def test_abandoning_a_claim_gives_the_folder_back(tmp_path):
    RunLock.claim(tmp_path / "new").release(abandon=True)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    RunLock.claim(tmp_path / "mine").release(abandon=True)
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        RunLock.claim(tmp_path / "file")
