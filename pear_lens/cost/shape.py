"""The numbers of a model that set what one of its passes costs: layers, heads, widths, vocabulary, parameters.

A token through one block costs about ``2 × block parameters`` multiply-adds plus its attention over the context
(``4 × heads × d_head × context``); a position whose logits are computed costs ``2 × d_model × vocabulary`` more.
:class:`ModelShape` holds the numbers these need, read off a loaded model (its configuration and its parameter
tensors), and the bytes its weights, its key-value cache and its activations take.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel


@dataclass(frozen=True)
class ModelShape:
    """What the cost of a pass depends on, for one model in one dtype."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    params: int
    """Every parameter, embeddings (and an untied unembedding) included."""
    block_params: int
    """Parameters of one transformer block (the mean over blocks)."""
    bytes_per_param: int
    """4 in float32, 2 in bfloat16 or float16."""

    @classmethod
    def of(cls, model: "LoadedModel") -> "ModelShape":
        """The shape of a loaded model, from its configuration and its parameters."""
        hf = model.bridge.original_model
        config = getattr(hf.config, "text_config", None) or hf.config
        n_layers, n_heads = model.n_layers, model.n_heads
        d_model = int(config.hidden_size)
        outside = sum(p.numel() for p in hf.get_input_embeddings().parameters())
        out = hf.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != hf.get_input_embeddings().weight.data_ptr():
            outside += sum(p.numel() for p in out.parameters())  # an untied unembedding
        params = sum(p.numel() for p in hf.parameters())
        first = next(hf.parameters())
        return cls(n_layers=n_layers, n_heads=n_heads,
                   n_kv_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
                   d_model=d_model, d_head=int(getattr(config, "head_dim", None) or d_model // n_heads),
                   d_mlp=int(getattr(config, "intermediate_size", None) or 4 * d_model), d_vocab=model.d_vocab,
                   params=int(params), block_params=int(max(params - outside, 0) // max(n_layers, 1)),
                   bytes_per_param=first.element_size())

    # ------------------------------------------------------------------ work
    def block_flops(self, context: float | int) -> float:
        """Floating-point operations of one token through one block that attends to ``context`` positions."""
        return 2.0 * self.block_params + 4.0 * self.n_heads * self.d_head * context

    @property
    def logit_flops(self) -> float:
        """Floating-point operations of one position's logits (the unembedding)."""
        return 2.0 * self.d_model * self.d_vocab

    # ------------------------------------------------------------------ memory
    @property
    def weight_bytes(self) -> int:
        return self.params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        """Key-value cache of one token, every layer."""
        return 2 * self.n_layers * self.n_kv_heads * self.d_head * self.bytes_per_param

    @property
    def live_floats_per_token(self) -> int:
        """Activations of one token alive at once inside a block in a forward without gradients (residual,
        normalised input, queries, keys, values, attention output, the MLP's gate, up and product)."""
        return 4 * self.d_model + 2 * self.n_heads * self.d_head + 2 * self.n_kv_heads * self.d_head + 3 * self.d_mlp

    @property
    def saved_floats_per_token(self) -> int:
        """Activations of one token one block keeps for the backward pass (inputs of every matrix product and
        norm, and the MLP's activations); the attention pattern is counted apart."""
        return 6 * self.d_model + 3 * self.n_heads * self.d_head + 2 * self.n_kv_heads * self.d_head + 4 * self.d_mlp

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
