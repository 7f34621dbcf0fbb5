import pytest
import torch

from magicvideo.errors import PromptError
from magicvideo.text import CLIPTextEncoder, MiniLMTextEncoder, PromptEmbedding
from tiny_components import clip_text_model, clip_tokenizer


@pytest.fixture(scope="module")
def minilm():
    return MiniLMTextEncoder.from_pretrained(max_tokens=40)


def test_minilm_loads_from_the_installed_wheel(minilm):
    assert (MiniLMTextEncoder.package_folder() / "model.safetensors").is_file()
    emb = minilm(["a red circle over a meadow", "a crimson disc moving left and a blue star spinning over a sunset"])
    assert emb.hidden.shape == (2, 40, 384) and emb.hidden.dtype == torch.float32
    real = emb.hidden.abs().sum(-1) > 0  # padding states are exactly zero
    assert real[0].sum() < real[1].sum()  # a longer prompt has more real tokens
    assert real[0, : int(real[0].sum())].all()
    assert not any(p.requires_grad for p in minilm.model.parameters())


def test_padding_does_not_change_the_real_tokens(minilm):
    short = MiniLMTextEncoder(minilm.tokenizer, minilm.model, max_tokens=16)
    a, b = minilm("a pink heart over a sunset"), short("a pink heart over a sunset")
    torch.testing.assert_close(a.hidden[0, :16], b.hidden[0], atol=1e-5, rtol=1e-5)
    assert a.hidden[0, 16:].abs().max() == 0


def test_prompts_are_checked_before_encoding(minilm):
    with pytest.raises(PromptError, match="empty"):
        minilm("  ")
    with pytest.raises(PromptError, match="at most 40"):
        minilm("a red circle " * 20)
    empty = minilm.empty(3)
    assert empty.hidden.shape == (3, 40, 384)
    assert (empty.hidden.abs().sum(-1) > 0).sum(1).tolist() == [2, 2, 2]  # [CLS] [SEP]


def test_missing_folder_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MiniLMTextEncoder.from_pretrained(tmp_path)


def test_clip_encoder_same_interface(tmp_path):
    tokenizer = clip_tokenizer(tmp_path / "tokenizer")
    clip_text_model(tokenizer).save_pretrained(tmp_path / "text_encoder")
    enc = CLIPTextEncoder.from_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer")
    emb = enc(["a red circle", "a blue square"])
    assert emb.hidden.shape == (2, 77, 32)
    assert enc.max_tokens == 77 and enc.dim == 32
    with pytest.raises(PromptError, match="at most 77"):
        enc("x" * 100)


def test_prompt_embedding_repeat_and_cat():
    e = PromptEmbedding(torch.arange(6.0).view(2, 3, 1))
    r = e.repeat(2)
    assert r.hidden[:, 0, 0].tolist() == [0, 0, 3, 3] and len(r) == 4
    assert len(PromptEmbedding.cat([e, r])) == 6


def test_sentence_vector_reads_the_real_tokens_only(minilm):
    from magicvideo.text import sentence_vector

    short = MiniLMTextEncoder(minilm.tokenizer, minilm.model, max_tokens=16)
    prompts = ["a pink heart over a sunset", "a blue star spinning over a meadow"]
    a, b = sentence_vector(minilm(prompts).hidden), sentence_vector(short(prompts).hidden)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # padding changes nothing
    assert a.shape == (2, 384)
    torch.testing.assert_close(a.norm(dim=-1), torch.full((2,), 384**0.5))
    assert torch.cosine_similarity(a[0], a[1], dim=0) < 0.99  # two prompts, two vectors


def test_only_a_pooled_text_unet_reads_the_sentence_vector(minilm):
    from diffusers import UNetMotionModel

    from magicvideo.stages.i2v import MotionAdapter
    from magicvideo.text import unet_text_inputs
    from magicvideo.training.t2i import T2ITrainConfig, build_unet

    config = T2ITrainConfig(widths=(32, 64), head_dim=16, pooled_text=True)
    torch.manual_seed(0)
    unet, plain = build_unet(config, 8).eval(), build_unet(T2ITrainConfig(widths=(32, 64), head_dim=16), 8)
    assert unet_text_inputs(plain, minilm("a red circle").hidden) == {}
    hidden = minilm(["a red circle over a meadow", "a red star over a meadow"]).hidden
    extra = unet_text_inputs(unet, hidden)
    assert extra["timestep_cond"].shape == (2, 384)
    x, t = torch.randn(1, 4, 8, 8).repeat(2, 1, 1, 1), torch.tensor([500, 500])
    with torch.no_grad():
        torch.nn.init.normal_(unet.time_embedding.cond_proj.weight)
        with_vector = unet(x, t, hidden, **extra).sample
        without = unet(x, t, hidden).sample
    assert (with_vector - without).abs().max() > 1e-3  # the vector changes the prediction
    # stage 2 inflates the stage-1 UNet: its motion UNet keeps the vector's projection, one per clip
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_max_seq_length=8)
    motion = UNetMotionModel.from_unet2d(unet, adapter)
    torch.testing.assert_close(motion.time_embedding.cond_proj.weight, unet.time_embedding.cond_proj.weight)
    assert unet_text_inputs(motion, hidden.repeat_interleave(4, 0), frames=4)["timestep_cond"].shape == (2, 384)
