"""HyenaDNA double: a causal convolution stack whose `forward` takes no `attention_mask` and
whose hidden states are n_layer + 2: the embeddings, each block, then the final norm.

Its implicit filter reuses one sine activation, whose trainable `freq` is therefore one
parameter under several names (`implicit_filter.1.freq`, `.3.freq`, ...); the Hub's safetensors
files keep one of those names, and the class lists `freq` in `_keys_to_ignore_on_load_missing`
(upstream: LongSafari/hyenadna-medium-160k-seqlen-hf modeling_hyena.py, `HyenaSin` and
`HyenaFilter.implicit_filter`, `HyenaDNAPreTrainedModel`)."""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithNoAttention

from .hyena_config import HyenaConfig


class Sin(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.freq = nn.Parameter(config.activation_freq * torch.ones(1, config.filter_order))

    def forward(self, x):
        return torch.sin(self.freq * x)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)
        self.conv = nn.Conv1d(config.d_model, config.d_model, config.kernel, groups=config.d_model)
        self.mix = nn.Linear(config.d_model, config.d_model)
        self.pad, self.max_seq_len = config.kernel - 1, config.max_seq_len
        act = Sin(config)  # one module, appended twice: its freq is shared
        self.implicit_filter = nn.Sequential(
            nn.Linear(1, config.filter_order), act, nn.Linear(config.filter_order, config.filter_order), act,
            nn.Linear(config.filter_order, config.d_model, bias=False),
        )  # fmt: skip

    def forward(self, x):
        t = (torch.arange(x.shape[1], device=x.device, dtype=x.dtype) / self.max_seq_len)[:, None]
        decay = self.implicit_filter(t)  # a filter of the position (on the model's fixed grid), per channel
        h = self.norm(x).transpose(1, 2)
        h = self.conv(nn.functional.pad(h, (self.pad, 0))).transpose(1, 2)  # causal: left padding only
        return x + self.mix(nn.functional.gelu(h)) * torch.sigmoid(decay)


class HyenaDNAModel(PreTrainedModel):
    config_class = HyenaConfig
    base_model_prefix = "hyena"
    _keys_to_ignore_on_load_missing = (r"freq",)  # the shared tensors safetensors keeps once (a list upstream)

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
