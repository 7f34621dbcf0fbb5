"""benchmarks/weights_budget.py counts every committed version of a weights file, not only today's."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "weights_budget.py"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def _write(repo: Path, rel: str, size: int) -> None:
    path = repo / "src/magicvideo/weights" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))


def test_history_counts_replaced_versions(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _write(tmp_path, "tiny/unet/model.safetensors", 1000)
    _write(tmp_path, "tiny/unet/config.json", 10)  # only safetensors count
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "v0")
    _write(tmp_path, "tiny/unet/model.safetensors", 1500)  # a new version: the old one stays in history
    _write(tmp_path, "tiny/lora/lora.safetensors", 300)
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "v1")
    out = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    assert "| tiny/unet | 1,500 | 2,500 | 2 |" in out
    assert "| tiny/lora | 300 | 300 | 1 |" in out
    assert "history total: 2,800 bytes" in out and "within" in out
