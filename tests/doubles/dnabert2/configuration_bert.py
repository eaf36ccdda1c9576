"""DNABERT-2 double, its config: the class derives from `PretrainedConfig` and the checkpoint's
config.json names no `model_type`, so under transformers 5 nothing gives it BERT's
`pad_token_id`, `is_decoder` or `add_cross_attention`, which the model class reads while it is
built (upstream: zhihan1996/DNABERT-2-117M configuration_bert.py, as issue 26 describes it)."""

from transformers import PretrainedConfig


class BertConfig(PretrainedConfig):
    def __init__(
        self,
        alibi_starting_size=512,
        vocab_size=4096,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        **kwargs,
    ):
        self.alibi_starting_size = alibi_starting_size
        self.vocab_size, self.hidden_size, self.hidden_act = vocab_size, hidden_size, hidden_act
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.intermediate_size, self.max_position_embeddings = intermediate_size, max_position_embeddings
        self.hidden_dropout_prob, self.attention_probs_dropout_prob = hidden_dropout_prob, attention_probs_dropout_prob
        self.type_vocab_size, self.initializer_range = type_vocab_size, initializer_range
        self.layer_norm_eps = layer_norm_eps
        super().__init__(**kwargs)
