"""How much of the shipped-weights budget git history holds.

    python benchmarks/weights_budget.py

Every version of a weights file committed stays in the repository's history for good, so what
counts against the budget (300 MB of safetensors) is every such blob reachable from HEAD, not
only the files in the tree today. Prints, per component of `src/magicvideo/weights/`, the size
in today's tree and in history, and the total against the budget in MB and in MiB. Run it from
the repository root, in a clone with its full history.
"""

from __future__ import annotations

import argparse
import subprocess
from collections import defaultdict
from pathlib import PurePosixPath

WEIGHTS = "src/magicvideo/weights"
BUDGET_BYTES = 300_000_000


def _git(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["git", *args], input=stdin, capture_output=True, text=True, check=True).stdout


def blobs(rev: str) -> list[tuple[str, int]]:
    """(path, bytes) of every distinct safetensors blob under WEIGHTS reachable from `rev`."""
    listing = _git("rev-list", "--objects", rev, "--", WEIGHTS)
    checked = _git("cat-file", "--batch-check=%(objecttype) %(objectsize) %(rest)", stdin=listing)
    out = []
    for line in checked.splitlines():
        kind, size, *path = line.split(" ", 2)
        if kind == "blob" and path and path[0].endswith(".safetensors"):
            out.append((path[0], int(size)))
    return out


def component(path: str) -> str:
    parts = PurePosixPath(path).relative_to(WEIGHTS).parts
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD", help="the commit whose history counts (default HEAD)")
    args = parser.parse_args()
    if _git("rev-parse", "--is-shallow-repository").strip() == "true":
        raise SystemExit("this clone is shallow: its history is cut, so the total would be too low "
                         "(git fetch --unshallow first)")
    history, versions = defaultdict(int), defaultdict(int)
    for path, size in blobs(args.rev):
        history[component(path)] += size
        versions[component(path)] += 1
    tree = defaultdict(int)
    for line in _git("ls-tree", "-r", "-l", args.rev, "--", WEIGHTS).splitlines():
        meta, path = line.split("\t", 1)
        if path.endswith(".safetensors"):
            tree[component(path)] += int(meta.split()[3])
    print("| component | in the tree (bytes) | in history (bytes) | versions in history |")
    print("|---|---|---|---|")
    for name in sorted(history):
        print(f"| {name} | {tree.get(name, 0):,} | {history[name]:,} | {versions[name]} |")
    total = sum(history.values())
    print(f"\nhistory total: {total:,} bytes = {total / 1e6:.2f} MB = {total / 2**20:.2f} MiB; "
          f"budget {BUDGET_BYTES / 1e6:.0f} MB: {'OVER' if total > BUDGET_BYTES else 'within'} "
          f"by {abs(BUDGET_BYTES - total) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
