"""GPN double: importing this package registers its classes with transformers (no `auto_map`);
the model is a dilated convolution stack that returns only `last_hidden_state`."""

from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput


class ConvNetConfig(PretrainedConfig):
    model_type = "ConvNet"

    def __init__(self, vocab_size=8, hidden_size=32, n_layers=3, kernel_size=5, pad_token_id=0, **kwargs):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.hidden_size, self.n_layers, self.kernel_size = (
            vocab_size,
            hidden_size,
            n_layers,
            kernel_size,
        )


class Layer(nn.Module):
    def __init__(self, config, dilation):
        super().__init__()
        self.conv = nn.Conv1d(
            config.hidden_size, config.hidden_size, config.kernel_size, padding="same", dilation=dilation
        )
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, x):
        return self.norm(x + nn.functional.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2)))


class ConvNetModel(PreTrainedModel):
    config_class = ConvNetConfig
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = nn.ModuleList(Layer(config, 2**i) for i in range(config.n_layers))
        self.post_init()

    def forward(self, input_ids, **kwargs):
        x = self.embedding(input_ids)
        for layer in self.encoder:
            x = layer(x)
        return BaseModelOutput(last_hidden_state=x)


AutoConfig.register("ConvNet", ConvNetConfig)
AutoModel.register(ConvNetConfig, ConvNetModel)
