"""HyenaDNA double: a causal convolution stack whose `forward` takes no `attention_mask` and
whose hidden states are n_layer + 2: the embeddings, each block, then the final norm."""

from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithNoAttention

from .hyena_config import HyenaConfig


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)
        self.conv = nn.Conv1d(config.d_model, config.d_model, config.kernel, groups=config.d_model)
        self.mix = nn.Linear(config.d_model, config.d_model)
        self.pad = config.kernel - 1

    def forward(self, x):
        h = self.norm(x).transpose(1, 2)
        h = self.conv(nn.functional.pad(h, (self.pad, 0))).transpose(1, 2)  # causal: left padding only
        return x + self.mix(nn.functional.gelu(h))


class HyenaDNAModel(PreTrainedModel):
    config_class = HyenaConfig
    base_model_prefix = "hyena"

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.post_init()

    def forward(self, input_ids, inputs_embeds=None, output_hidden_states=None, return_dict=None):
        x = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        x = self.ln_f(x)
        states.append(x)
        return BaseModelOutputWithNoAttention(
            last_hidden_state=x, hidden_states=tuple(states) if output_hidden_states else None
        )
