"""NT v2 double: a config of the stock type name `esm`, loaded through `auto_map`."""

from transformers import PretrainedConfig


class NTv2Config(PretrainedConfig):
    model_type = "esm"

    def __init__(
        self,
        vocab_size=4107,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=2050,
        pad_token_id=1,
        mask_token_id=2,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, mask_token_id=mask_token_id, **kwargs)
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size = num_attention_heads, intermediate_size
        self.max_position_embeddings = max_position_embeddings
