"""DNABERT-2 double, its model (MosaicBERT): the interfaces of the real code, written small.

What the real code does and this double does too (upstream: MAGICS-LAB/DNABERT_S
evaluate/model_codes/bert_layers.py @ e33f440f, the DNABERT-2-117M code DNABERT-S reuses):

- `einops` imported at the top (a missing package fails the import);
- the Triton attention used whenever `flash_attn_triton` imports, PyTorch attention otherwise;
- between blocks the hidden states are unpadded, (tokens, dim): a block's output is not
  (rows, width, dim), and `output_all_encoded_layers=True` returns the blocks' unpadded states;
- ALiBi built as a plain attribute on the CPU in `__init__`, moved on the first forward pass;
- `forward` returns a tuple (states, pooled), no `hidden_states`, and reads
  `config.pad_token_id` while it is built.
"""

import copy
import math

import torch
from einops import rearrange
from torch import nn
from transformers.models.bert.modeling_bert import BertPreTrainedModel

from .bert_padding import index_first_axis, pad_input, unpad_input, unpad_input_only

try:
    from .flash_attn_triton import flash_attn_qkvpacked_func
except ImportError:
    flash_attn_qkvpacked_func = None


class BertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids=None):
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))  # no position embeddings: ALiBi


class BertUnpadSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.p_dropout = config.attention_probs_dropout_prob
        self.dropout = nn.Dropout(self.p_dropout)
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def forward(self, hidden_states, cu_seqlens, max_seqlen_in_batch, indices, attn_mask, bias):
        qkv = pad_input(self.Wqkv(hidden_states), indices, cu_seqlens.shape[0] - 1, max_seqlen_in_batch)
        qkv = rearrange(qkv, "b s (t h d) -> b s t h d", t=3, h=self.num_attention_heads)
        if self.p_dropout or flash_attn_qkvpacked_func is None:
            q, k, v = (qkv[:, :, i].permute(0, 2, 1, 3) for i in range(3))
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.attention_head_size) + bias
            attention = (self.dropout(scores.softmax(dim=-1)) @ v).permute(0, 2, 1, 3)
        else:
            attention = flash_attn_qkvpacked_func(qkv.to(torch.float16), bias.to(torch.float16)).to(qkv.dtype)
        attention = unpad_input_only(attention, torch.squeeze(attn_mask) == 1)
        return rearrange(attention, "nnz h d -> nnz (h d)")


class BertSelfOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertUnpadAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = BertUnpadSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, input_tensor, cu_seqlens, max_s, subset_idx=None, indices=None, attn_mask=None, bias=None):
        self_output = self.self(input_tensor, cu_seqlens, max_s, indices, attn_mask, bias)
        if subset_idx is not None:
            return self.output(index_first_axis(self_output, subset_idx), index_first_axis(input_tensor, subset_idx))
        return self.output(self_output, input_tensor)


class BertGatedLinearUnitMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.gated_layers = nn.Linear(config.hidden_size, config.intermediate_size * 2, bias=False)
        self.act = nn.GELU(approximate="none")
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        residual = hidden_states
        gated, value = self.gated_layers(hidden_states).split(self.config.intermediate_size, dim=-1)
        return self.layernorm(self.wo(self.dropout(self.act(gated) * value)) + residual)


class BertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = BertUnpadAttention(config)
        self.mlp = BertGatedLinearUnitMLP(config)

    def forward(self, hidden_states, cu_seqlens, seqlen, subset_idx=None, indices=None, attn_mask=None, bias=None):
        return self.mlp(self.attention(hidden_states, cu_seqlens, seqlen, subset_idx, indices, attn_mask, bias))


class BertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        layer = BertLayer(config)
        self.layer = nn.ModuleList([copy.deepcopy(layer) for _ in range(config.num_hidden_layers)])
        self.num_attention_heads = config.num_attention_heads
        self.rebuild_alibi_tensor(size=int(config.alibi_starting_size))

    def rebuild_alibi_tensor(self, size, device=None):
        heads = self.num_attention_heads
        slopes = torch.tensor([2 ** (-8 * (i + 1) / heads) for i in range(heads)], device=device)
        position = torch.arange(size, device=device)
        distance = (position[None, :] - position[:, None]).abs()
        self._current_alibi_size = size
        self.alibi = (-slopes[:, None, None] * distance[None]).unsqueeze(0)  # an attribute, not a buffer

    def forward(self, hidden_states, attention_mask, output_all_encoded_layers=True, subset_mask=None):
        extended = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
        batch, seqlen = hidden_states.shape[:2]
        hidden_states, indices, cu_seqlens, _ = unpad_input(hidden_states, attention_mask.bool())
        if self._current_alibi_size < seqlen:
            self.rebuild_alibi_tensor(size=seqlen, device=hidden_states.device)
        elif self.alibi.device != hidden_states.device:
            self.alibi = self.alibi.to(hidden_states.device)
        bias = extended[:, :, :seqlen, :seqlen] + self.alibi[:, :, :seqlen, :seqlen]
        all_encoder_layers = []
        for layer_module in self.layer:
            hidden_states = layer_module(hidden_states, cu_seqlens, seqlen, None, indices, attention_mask, bias)
            if output_all_encoded_layers:
                all_encoder_layers.append(hidden_states)  # unpadded, as the real code returns them
        hidden_states = pad_input(hidden_states, indices, batch, seqlen)
        if not output_all_encoded_layers:
            all_encoder_layers.append(hidden_states)
        return all_encoder_layers


class BertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states, pool=True):
        return self.activation(self.dense(hidden_states[:, 0] if pool else hidden_states))


class BertModel(BertPreTrainedModel):
    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

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
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids)
        encoder_outputs = self.encoder(embedding_output, attention_mask, output_all_encoded_layers)
        sequence_output = encoder_outputs[-1]
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        if not output_all_encoded_layers:
            encoder_outputs = sequence_output
        return encoder_outputs, pooled_output


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=1e-12)

    def forward(self, hidden_states):
        return self.LayerNorm(nn.functional.gelu(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config, embedding_weights):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(embedding_weights.size(1), embedding_weights.size(0))
        self.decoder.weight = embedding_weights  # tied: safetensors keeps one name of the two

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config, embedding_weights):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, embedding_weights)

    def forward(self, sequence_output):
        return self.predictions(sequence_output)


class BertForMaskedLM(BertPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings.weight)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return self.cls(self.bert(input_ids, attention_mask=attention_mask)[0])
