"""Tiny randomly initialised models, one per supported family, for tests.

Built from Hugging Face configs, they exercise every code path (RoPE, learned positions, ALiBi, Conv1D,
GQA, parallel attention+MLP, Gemma's post-attention norms) in milliseconds; their scores mean nothing.
The same seed gives the same weights on every call.
"""
from __future__ import annotations

from typing import Any

import torch

from pear_lens.errors import ModelNotAvailable, PearLensError

TINY_VOCAB = 512
TINY_SEED = 1234


def _tiny_configs() -> dict[str, Any]:
    from transformers import (
        BloomConfig,
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        OPTConfig,
        Qwen2Config,
    )

    v, d, ff, layers, heads, ctx = TINY_VOCAB, 64, 128, 3, 4, 256
    common = dict(vocab_size=v, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return {
        "llama": (LlamaConfig(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                              num_attention_heads=heads, num_key_value_heads=2,
                              max_position_embeddings=ctx, **common), "LlamaForCausalLM"),
        "qwen2": (Qwen2Config(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                              num_attention_heads=heads, num_key_value_heads=2,
                              max_position_embeddings=ctx, **common), "Qwen2ForCausalLM"),
        "gpt2": (GPT2Config(n_embd=d, n_layer=layers, n_head=heads, n_positions=ctx, **common),
                 "GPT2LMHeadModel"),
        "opt": (OPTConfig(hidden_size=d, ffn_dim=ff, num_hidden_layers=layers, num_attention_heads=heads,
                          max_position_embeddings=ctx, word_embed_proj_dim=d, **common),
                "OPTForCausalLM"),
        "bloom": (BloomConfig(hidden_size=d, n_layer=layers, n_head=heads, **common), "BloomForCausalLM"),
        "gpt-neox": (GPTNeoXConfig(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                                   num_attention_heads=heads, max_position_embeddings=ctx,
                                   rotary_pct=0.5, **common), "GPTNeoXForCausalLM"),
        "gemma3": (Gemma3TextConfig(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                                    num_attention_heads=heads, num_key_value_heads=1, head_dim=16,
                                    max_position_embeddings=ctx, sliding_window=16,
                                    layer_types=["sliding_attention", "sliding_attention",
                                                 "full_attention"], **common),
                   "Gemma3ForCausalLM"),
    }


TINY_FAMILIES = ("llama", "qwen2", "gpt2", "opt", "bloom", "gpt-neox", "gemma3")


def tiny_tokenizer(vocab_size: int = TINY_VOCAB, name: str = "tiny"):
    """A word-level tokenizer over ``w0 … w{V-1}`` with BOS/EOS/PAD/UNK at ids 1/2/3/0."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", name_or_path=name, add_bos_token=True,
    )


def build_tiny(family: str):
    """Build the tiny ``family`` model deterministically (same weights every call)."""
    from transformers import AutoModelForCausalLM

    configs = _tiny_configs()
    if family not in configs:
        raise ModelNotAvailable(f"unknown tiny family {family!r}; choose one of {', '.join(configs)}")
    config, arch = configs[family]
    config.architectures = [arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval(), tiny_tokenizer(name=f"tiny-{family}")


def load_tiny(family: str, dtype: torch.dtype = torch.float32, device_map: Any = None):
    if device_map is not None:
        raise PearLensError(
            f"tiny-{family} is built in memory, so it takes no device_map; save it with "
            f"build_tiny({family!r}) and .save_pretrained(folder), then load that folder with device_map"
        )
    model, tok = build_tiny(family)
    return model.to(dtype), tok
