"""Preference tuning of stage 1 (Diffusion-DPO): the loss, pairs from votes or a file, a study of
stage 1's own stills, and a tuned stage that loads as a stage-1 folder."""

import json

import pytest
import torch

from magicvideo.cli import main
from magicvideo.media import write_image
from magicvideo.presets import load_t2i
from magicvideo.stages.t2i import TextToImage
from magicvideo.study.db import add_rater, connect, vote
from magicvideo.study.stills import make_still_study, stills_dir
from magicvideo.training.preference import PREFERENCETrainConfig, dpo_loss, read_pairs, train_preference
from tiny_components import tiny_unet


def _batch(unet, n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c, s = unet.config.in_channels, unet.config.sample_size
    hidden = torch.randn(n, 3, unet.config.cross_attention_dim, generator=g).repeat(2, 1, 1)
    return (torch.randn(2 * n, c, s, s, generator=g), torch.randint(0, 1000, (n,), generator=g).repeat(2),
            torch.randn(2 * n, c, s, s, generator=g), hidden)


def test_dpo_starts_at_log_2_and_learns_to_prefer_the_chosen_image():
    torch.manual_seed(0)
    unet = tiny_unet(cross_attention_dim=16)
    reference = tiny_unet(cross_attention_dim=16)
    reference.load_state_dict(unet.state_dict())
    reference.requires_grad_(False)
    batch = _batch(unet)
    assert dpo_loss(unet, reference, batch, beta=2500).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    noisy, t, target, hidden = batch
    plain = (unet(noisy[:2], t[:2], hidden[:2]).sample - target[:2]).pow(2).mean()  # the preferred rows' loss
    assert dpo_loss(unet, reference, batch, beta=2500, sft_weight=0.5).item() == pytest.approx(
        torch.log(torch.tensor(2.0)).item() + 0.5 * plain.item(), rel=1e-5)
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    for _ in range(20):
        loss = dpo_loss(unet, reference, batch, beta=2500)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3

    def errors(model):
        noisy, t, target, hidden = batch
        return (model(noisy, t, hidden).sample - target).pow(2).mean(dim=(1, 2, 3)).chunk(2)

    (e_w, e_l), (r_w, r_l) = errors(unet), errors(reference)
    assert ((e_w - r_w) < (e_l - r_l)).all()  # better than the reference on the chosen, relative to the other


def test_pairs_files_and_study_votes_give_the_chosen_image_first(tmp_path):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, torch.rand(3, 8, 8))
    lines = [{"prompt": "a red star  over a desert", "chosen": "a.png", "rejected": "b.png"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    [(prompt, chosen, rejected)] = read_pairs(PREFERENCETrainConfig(pairs=str(tmp_path / "p.jsonl")))
    assert (prompt, chosen.name, rejected.name) == ("a red star over a desert", "a.png", "b.png")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "chosen": "a.png"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_pairs(PREFERENCETrainConfig(pairs=str(tmp_path / "bad.jsonl")))
    (tmp_path / "gone.jsonl").write_text('{"prompt": "x", "chosen": "a.png", "rejected": "c.png"}\n')
    with pytest.raises(FileNotFoundError, match="no image"):
        read_pairs(PREFERENCETrainConfig(pairs=str(tmp_path / "gone.jsonl")))
    with pytest.raises(ValueError, match="once"):
        read_pairs(PREFERENCETrainConfig())


@pytest.fixture(scope="module")
def stills(tmp_path_factory):
    path = tmp_path_factory.mktemp("stills") / "s.db"
    make_still_study(path, prompts=3, seeds=2, progress=False).close()
    return path


def test_a_stills_study_pairs_two_seeds_of_each_prompt_and_votes_decide(stills):
    db = connect(stills)
    pairs = db.execute("SELECT id FROM pairs ORDER BY id").fetchall()
    assert len(pairs) == 3 and len(list((stills_dir(stills) / "seed_1").glob("*.png"))) == 3
    with pytest.raises(ValueError, match="no pair that its votes decide"):
        read_pairs(PREFERENCETrainConfig(study=str(stills)))
    a, b = add_rater(db, "a")["id"], add_rater(db, "b")["id"]
    vote(db, a, pairs[0]["id"], "left")
    vote(db, b, pairs[0]["id"], "left")
    vote(db, a, pairs[1]["id"], "left")  # a tie: left out
    vote(db, b, pairs[1]["id"], "right")
    vote(db, a, pairs[2]["id"], "right")
    found = read_pairs(PREFERENCETrainConfig(study=str(stills)))
    rows = db.execute("""SELECT vl.source AS l, vr.source AS r FROM pairs p JOIN videos vl ON vl.id = p.left_video
                         JOIN videos vr ON vr.id = p.right_video ORDER BY p.id""").fetchall()
    assert [(str(c), str(r)) for _, c, r in found] == [(rows[0]["l"], rows[0]["r"]), (rows[2]["r"], rows[2]["l"])]


def test_a_tuned_stage_is_a_lora_over_the_stage_it_names(tmp_path, stills):
    db = connect(stills)
    judge = add_rater(db, "x")["id"]
    for pair in db.execute("SELECT id FROM pairs").fetchall():
        vote(db, judge, pair["id"], "left")
    config = PREFERENCETrainConfig(study=str(stills), steps=2, batch_size=2, warmup=1, eval_prompts=0, lr=0.0)
    final = train_preference(config, tmp_path / "run", progress=False)
    assert json.loads((final / "config.json").read_text())["stage"].endswith("t2i_lora")
    tuned, base = TextToImage.from_pretrained(final), load_t2i("tiny")
    for (key, a), b in zip(tuned.unet.state_dict().items(), base.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b), key  # lr 0: the LoRA is zero, so the stage it names, exactly


def test_cli_preference_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "preference", "--out", str(tmp_path / "r")]) == 2
    assert main(["train", "preference", "--pairs", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "r")]) == 2
    assert main(["train", "t2i", "--study", "x.db", "--out", str(tmp_path / "r")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "once" in errors[0] and "no pairs file" in errors[1] and "study" in errors[2]
    assert not (tmp_path / "r").exists()
    assert main(["study", "stills", str(tmp_path / "s.db"), "--seeds", "1"]) == 2


def test_world_pairs_differ_in_one_objects_shape_and_read_as_a_pairs_file(tmp_path, capsys):
    import dataclasses

    import numpy as np

    from magicvideo.world import draw_clip, render_frames, render_masks
    from magicvideo.world.pairs import counterfactual

    for i in range(6):
        scene = draw_clip(0, "train", i).scene
        other = counterfactual(scene, np.random.default_rng(i), "shape")
        changed = [k for k, (a, b) in enumerate(zip(scene.objects, other.objects, strict=True)) if a != b]
        assert len(changed) == 1 and other.background == scene.background
        a, b = scene.objects[changed[0]], other.objects[changed[0]]
        assert a.shape != b.shape and dataclasses.replace(b, shape=a.shape) == a
        # the two stills differ only where either version of the changed object is drawn
        diff = (render_frames(scene, 64, [0.0]) - render_frames(other, 64, [0.0])).abs().amax(0)[0]
        where = (render_masks(scene, 64, [0.0])[changed[0], 0] + render_masks(other, 64, [0.0])[changed[0], 0]) > 0
        assert diff.max() > 0.1 and diff[~where].max() == 0
    assert main(["synth-pairs", "--out", str(tmp_path / "p"), "--count", "3", "--size", "32", "--quiet"]) == 0
    found = read_pairs(PREFERENCETrainConfig(pairs=str(tmp_path / "p" / "pairs.jsonl")))
    assert [prompt for prompt, _, _ in found] == [draw_clip(0, "train", i).caption for i in range(3)]
    assert all(c.is_file() and r.is_file() and c.read_bytes() != r.read_bytes() for _, c, r in found)
    capsys.readouterr()
    assert main(["synth-pairs", "--out", str(tmp_path / "q"), "--count", "0"]) == 2
    assert "count must be positive" in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_t_min_keeps_pairs_at_high_noise_and_is_checked(tmp_path):
    from magicvideo.diffusion.schedule import noise_scheduler
    from magicvideo.training.preference import _batch as pair_batch

    cache = {"latents": torch.randn(5, 2, 4, 8, 8), "hidden": torch.randn(5, 3, 16).half()}
    config = PREFERENCETrainConfig(pairs="x", batch_size=8, t_min=600)
    _, t, _, _ = pair_batch(cache, config, noise_scheduler(), step=0)
    assert t.min() >= 600 and t.view(-1, 2).eq(t.view(-1, 2)[:, :1]).all()  # one timestep per pair
    with pytest.raises(ValueError, match="t_min"):
        train_preference(PREFERENCETrainConfig(pairs="x", t_min=1000), tmp_path / "r")
