"""NT v2 double: rotary attention and a gated MLP whose weights the stock EsmModel cannot take.
`auto_map` names only the masked-LM class (as the real checkpoint does); its base is `.esm`.

Its imports are the real file's: written against transformers 4.32, it takes
`find_pruneable_heads_and_indices` and `prune_linear_layer` from `transformers.modeling_utils`,
where transformers 5 has neither (upstream: InstaDeepAI/nucleotide-transformer-v2-500m-multi-species
modeling_esm.py, a copy of transformers 4.32's ESM; the vendored copy in
nucleotide_transformer_neuron says it restores those helpers to import under transformers 5)."""

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput
from transformers.modeling_utils import PreTrainedModel, find_pruneable_heads_and_indices, prune_linear_layer

from .ntv2_config import NTv2Config

PRUNING = (find_pruneable_heads_and_indices, prune_linear_layer)  # imported for head pruning, never run here


def rotate(x, positions):
    half = x.shape[-1] // 2
    freq = 1.0 / (10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
    angle = positions[:, None].float() * freq[None, :]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.norm1, self.norm2 = nn.LayerNorm(config.hidden_size), nn.LayerNorm(config.hidden_size)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.gate_up = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)  # SwiGLU
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x, mask):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        positions = torch.arange(n, device=x.device)
        q, k = rotate(q, positions), rotate(k, positions)
        attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :].bool())
        x = x + self.out(attended.transpose(1, 2).reshape(b, n, d))
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(nn.functional.silu(gate) * up)


class NTv2Model(PreTrainedModel):
    config_class = NTv2Config
    base_model_prefix = "esm"

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, **kwargs):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        x = self.embed(input_ids)
        states = [x]
        for block in self.blocks:
            x = block(x, mask)
            states.append(x)
        x = self.final_norm(x)
        states[-1] = x
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(states) if output_hidden_states else None)


class NTv2ForMaskedLM(PreTrainedModel):
    config_class = NTv2Config
    base_model_prefix = "esm"

    def __init__(self, config):
        super().__init__(config)
        self.esm = NTv2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return MaskedLMOutput(logits=self.lm_head(self.esm(input_ids, attention_mask).last_hidden_state))
