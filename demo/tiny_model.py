"""
demo/tiny_model.py: a ~1M-parameter Qwen3-VL (or Qwen2.5-VL) built offline in code, for the demo
and the tests: a hand-written config of the real architecture, a byte-level BPE tokenizer trained
on a given corpus with the Qwen special tokens and chat template, and an image-only processor (no
torchvision needed). Saved with save_pretrained, so rollout.load_model reads it exactly as it
reads a real checkpoint. widen() gives a copy a real-size vocabulary (152k) without a download.
What the model is trained on is the demo task's business (toy.py).
"""
import os

import torch

import rollout

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def build_tokenizer(corpus, vocab_size=1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    t = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                                      "vision_bos_token": "<|vision_start|>",
                                                      "vision_eos_token": "<|vision_end|>"})
    t.chat_template = CHAT_TEMPLATE
    return t


def build_config(tok, family="qwen3"):
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  tie_word_embeddings=True)
    text = dict(vocab_size=len(tok), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                rms_norm_eps=1e-6, tie_word_embeddings=True)
    if family == "qwen3":
        from transformers import Qwen3VLConfig
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                                   "mrope_section": [6, 5, 5], "mrope_interleaved": True}
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[1])
        return Qwen3VLConfig(text_config=text, vision_config=vision, **common)
    if family == "qwen2.5":
        from transformers import Qwen2_5_VLConfig
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [6, 5, 5]}
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    raise ValueError(f"family must be qwen3 or qwen2.5, got {family!r}")


def build_processor(tok, family="qwen3"):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, Qwen3VLProcessor
    patch = 16 if family == "qwen3" else 14
    # small images stay small: 64..256 merged tokens' worth of pixels
    side = patch * 2
    ip = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": 4 * side * side, "longest_edge": 64 * side * side},
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    cls = Qwen3VLProcessor if family == "qwen3" else Qwen2_5_VLProcessor
    return rollout.image_only_processor(cls, ip, tok, CHAT_TEMPLATE)


def build_model(out_dir, corpus, family="qwen3", seed=0):
    """A random-weight tiny model, its tokenizer (trained on corpus, a list of lines) and
    processor, saved to out_dir."""
    from transformers import AutoModelForImageTextToText
    torch.manual_seed(seed)
    tok = build_tokenizer(corpus)
    config = build_config(tok, family)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    rollout.save_processor(build_processor(tok, family), out_dir)
    return out_dir


REAL_VOCAB = 151_936   # rows of a real Qwen2.5-VL / Qwen3-VL lm-head
THINKING_TEMPLATE = CHAT_TEMPLATE.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")


def widen(model_dir, out_dir, vocab_size=REAL_VOCAB, thinking=False, seed=0):
    """A copy of a tiny model with a real-size vocabulary (and a Thinking chat template): the
    costs and tails of a 152k-token softmax without any download. The trained rows are kept;
    the new ones get small random embeddings (half the trained rows' std), so the model puts a
    few percent of its mass on them, as a real model spreads mass over rare tokens."""
    model, processor = rollout.load_model(model_dir, dtype="float32", device="cpu")
    old = model.get_input_embeddings().weight.data
    g = torch.Generator().manual_seed(seed)
    new = torch.randn(vocab_size - old.shape[0], old.shape[1], generator=g) * old.std() * 0.5
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    model.get_input_embeddings().weight.data[:] = torch.cat([old, new])
    model.tie_weights()
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    if thinking:
        processor.tokenizer.chat_template = processor.chat_template = THINKING_TEMPLATE
    rollout.save_processor(processor, out_dir)
    return out_dir
