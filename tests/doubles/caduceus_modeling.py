"""Caduceus double: bidirectional long-context mixing (a scan each way) with no attention mask,
so padding a window changes its vectors: a loader must batch equal lengths."""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .caduceus_config import CaduceusConfig


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)
        self.forward_gate, self.backward_gate = (
            nn.Linear(config.d_model, config.d_model),
            nn.Linear(config.d_model, config.d_model),
        )

    def forward(self, x):
        h = self.norm(x)
        length = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None]
        ahead = torch.cumsum(self.forward_gate(h), dim=1) / length
        behind = torch.flip(torch.cumsum(torch.flip(self.backward_gate(h), [1]), dim=1), [1]) / torch.flip(length, [1])
        return x + torch.tanh(ahead + behind)


class CaduceusModel(PreTrainedModel):
    config_class = CaduceusConfig
    base_model_prefix = "caduceus"

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = nn.LayerNorm(config.d_model)
        self.post_init()

    def forward(self, input_ids, output_hidden_states=False, **kwargs):
        x = self.embeddings(input_ids)
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        x = self.norm_f(x)
        states[-1] = x
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(states) if output_hidden_states else None)
