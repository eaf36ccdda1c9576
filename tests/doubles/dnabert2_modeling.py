"""DNABERT-2 double: `model_type: bert` with its own layers (`Wqkv`, `gated_layers`), an ALiBi
buffer built in `__init__` from a CPU tensor (which fails under meta-device initialisation),
and a `forward` that returns a tuple and no hidden states."""

import math

import torch
from torch import nn
from transformers import BertConfig, PreTrainedModel


def alibi(heads, size):
    slopes = torch.tensor([2 ** (-8 * (i + 1) / heads) for i in range(heads)])
    distance = torch.arange(size, device="cpu")  # the real code builds it on the CPU explicitly
    return -slopes[:, None, None] * (distance[None, :] - distance[:, None]).abs()[None]


class Layer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm1, self.norm2 = nn.LayerNorm(config.hidden_size), nn.LayerNorm(config.hidden_size)
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x, bias):
        b, n, d = x.shape
        q, k, v = self.Wqkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + bias
        x = self.norm1(x + self.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)))
        gate, value = self.gated_layers(x).chunk(2, dim=-1)
        return self.norm2(x + self.wo(nn.functional.gelu(gate) * value))


class BertModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"

    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.register_buffer("alibi", alibi(config.num_attention_heads, config.alibi_starting_size), persistent=False)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        self.post_init()

    def forward(
        self,
        input_ids,
        token_type_ids=None,
        attention_mask=None,
        position_ids=None,
        output_all_encoded_layers=False,
        masked_tokens_mask=None,
        **kwargs,
    ):
        n = input_ids.shape[1]
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        bias = self.alibi[:, :n, :n][None] + (1.0 - mask[:, None, None, :].float()) * -10000.0
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, bias)
        pooled = self.pooler(x[:, 0]) if self.pooler is not None else None
        return x, pooled


class BertForMaskedLM(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return self.cls(self.bert(input_ids, attention_mask=attention_mask)[0])
