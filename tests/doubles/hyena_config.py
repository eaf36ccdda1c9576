"""HyenaDNA double's config: `d_model` and `n_layer`, no `hidden_size`."""

from transformers import PretrainedConfig


class HyenaConfig(PretrainedConfig):
    model_type = "hyenadna"

    def __init__(
        self, vocab_size=12, d_model=32, n_layer=2, max_seq_len=1026, kernel=5, pad_token_id=4, filter_order=8,
        activation_freq=10, **kwargs,
    ):  # fmt: skip
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.d_model, self.n_layer = vocab_size, d_model, n_layer
        self.max_seq_len, self.kernel = max_seq_len, kernel
        self.filter_order, self.activation_freq = filter_order, activation_freq
