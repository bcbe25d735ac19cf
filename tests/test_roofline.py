import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lcopt.roofline import decode_bytes, prefill_flops, weight_bytes


class PackedLinear(torch.nn.Module):
    """Stands in for a 4-bit layer (lcopt.int4.TinyGemmLinear): packed codes in a buffer, no parameters."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("packed", torch.zeros(linear.out_features, linear.in_features // 8, dtype=torch.int32))

    def weight_bytes(self) -> int:
        return self.in_features * self.out_features // 2


def test_quantized_layers_count_their_full_matmul_in_prefill_flops_and_half_a_byte_per_weight_in_reads():
    """A quantized model does the same prefill FLOPs as its bf16 twin (the gptq4 rows of the H200
    workflow run showed a prefill roofline 7x below bf16's before: its packed weights are buffers)."""
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    flops, read = prefill_flops(model, 100), weight_bytes(model)
    mlp = model.model.layers[0].mlp
    mlp.down_proj = PackedLinear(mlp.down_proj)
    assert prefill_flops(model, 100) == flops
    assert weight_bytes(model) == read - 64 * 128 * 2 + 64 * 128 // 2


def test_a_decode_step_reads_one_row_of_the_embedding_and_the_lm_head_once():
    """The issue-22 definition: every decoder and LM-head weight once, the embedding's one row (the token
    embedded); a tied LM head reads the whole table, counted once."""
    small = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    untied = LlamaForCausalLM(LlamaConfig(**small, tie_word_embeddings=False)).to(torch.bfloat16)
    every = sum(p.numel() for p in untied.parameters()) * 2
    assert weight_bytes(untied) == every - 256 * 64 * 2 + 64 * 2
    tied = LlamaForCausalLM(LlamaConfig(**small, tie_word_embeddings=True)).to(torch.bfloat16)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert weight_bytes(tied) == sum(p.numel() for p in tied.parameters()) * 2  # parameters() dedupes: once
    assert decode_bytes(tied, 1000.0, 100, 10) == weight_bytes(tied) + 1000.0 * 105
