"""Caduceus double's config: no maximum length anywhere."""

from transformers import PretrainedConfig


class CaduceusConfig(PretrainedConfig):
    model_type = "caduceus"

    def __init__(self, vocab_size=12, d_model=32, n_layer=2, pad_token_id=4, **kwargs):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.d_model, self.n_layer = vocab_size, d_model, n_layer
