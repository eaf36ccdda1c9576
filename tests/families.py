"""Tiny random checkpoints of every model family the tool must load, built in a test's folder.

Each is saved the way its Hub checkpoint is (`save_pretrained`: config, weights, tokenizer
files, and for custom-code families their Python files beside them), hidden size 32 and two
or three blocks, so a test builds it in a moment and loads it through the same code as a
real download.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from genome_index.embedding.backends.checkpoints import BUNDLED

DOUBLES = Path(__file__).parent / "doubles"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def fast_tokenizer(
    folder: Path, model: object, max_length: int | None = 512, lower: bool = False, template: str | None = "cls"
) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers` model as a Hub tokenizer: [CLS] x [SEP], or x [SEP] (`eos`), or x."""
    tokenizer = Tokenizer(model)
    if lower:
        tokenizer.normalizer = normalizers.Lowercase()
    if isinstance(model, models.WordLevel):
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    vocab = tokenizer.get_vocab()
    if template == "cls":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
    elif template == "eos":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A [SEP]", special_tokens=[("[SEP]", vocab["[SEP]"])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=max_length or int(1e30),
    )  # fmt: skip
    fast.save_pretrained(folder)
    return fast


def char_tokenizer(folder: Path, alphabet: str = "ACGTN", **kwargs: object) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate([*SPECIALS, *alphabet])}
    return fast_tokenizer(folder, models.WordLevel(vocab, unk_token="[UNK]"), **kwargs)


def bpe_tokenizer(folder: Path, **kwargs: object) -> PreTrainedTokenizerFast:
    """A DNABERT-2-like BPE vocabulary learnt on random DNA: no N, so N is the unknown token."""
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("ACGT"), 400)) for _ in range(200)]
    model = models.BPE(unk_token="[UNK]")
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=SPECIALS, initial_alphabet=list("ACGT"))
    tokenizer = Tokenizer(model)
    tokenizer.train_from_iterator(texts, trainer)
    return fast_tokenizer(folder, tokenizer.model, **kwargs)


def stock(kind: str, folder: Path) -> Path:
    """A checkpoint of a class that ships with transformers."""
    import transformers as t

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 48}
    if kind == "esm-rotary":
        for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(BUNDLED["nt-tiny"] / name, folder / name)
        config = t.EsmConfig.from_pretrained(BUNDLED["nt-tiny"], position_embedding_type="rotary", **small)
        t.EsmForMaskedLM(config).save_pretrained(folder)
    elif kind == "bert-bpe":
        vocab = bpe_tokenizer(folder).vocab_size
        t.BertForMaskedLM(t.BertConfig(vocab_size=vocab, max_position_embeddings=512, **small)).save_pretrained(folder)
    elif kind in ("modernbert-char", "modernbert-bpe"):
        tokenizer = char_tokenizer(folder) if kind.endswith("char") else bpe_tokenizer(folder)
        config = t.ModernBertConfig(
            vocab_size=tokenizer.vocab_size, max_position_embeddings=1024, pad_token_id=0, global_attn_every_n_layers=2,
            local_attention=16, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3, **small,
        )  # fmt: skip
        t.ModernBertForMaskedLM(config).save_pretrained(folder)
    elif kind == "llama-char":
        tokenizer = char_tokenizer(folder, template=None)
        config = t.LlamaConfig(
            vocab_size=tokenizer.vocab_size,
            max_position_embeddings=1024,
            num_key_value_heads=2,
            pad_token_id=0,
            **small,
        )
        t.LlamaForCausalLM(config).save_pretrained(folder)
    elif kind == "roformer-lower":
        tokenizer = char_tokenizer(folder, alphabet="acgtn", lower=True)
        config = t.RoFormerConfig(
            vocab_size=tokenizer.vocab_size, max_position_embeddings=512, embedding_size=32, **small
        )
        t.RoFormerForMaskedLM(config).save_pretrained(folder)
    elif kind == "t5":
        tokenizer = char_tokenizer(folder, template="eos")
        config = t.T5Config(
            vocab_size=tokenizer.vocab_size, d_model=32, d_kv=16, d_ff=48, num_layers=2, num_heads=2, pad_token_id=0,
            decoder_start_token_id=0, eos_token_id=3,
        )  # fmt: skip
        t.T5ForConditionalGeneration(config).save_pretrained(folder)
    else:
        raise ValueError(kind)
    return folder


def _save_as_the_hub_does(model: torch.nn.Module, folder: Path, config: dict, drop: tuple[str, ...] = ()) -> None:
    """Weights through safetensors, which keeps one name of each shared tensor (as the Hub's files
    do), and config.json as `config` says, less the keys in `drop`."""
    from safetensors.torch import save_model

    save_model(model, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in drop}, indent=2))


def _import_double(files: tuple[str, ...]) -> dict[str, object]:
    """The double's modules, imported as the package `doubles` (with transformers 4's helpers
    lent while they import, as the loader lends them)."""
    import importlib
    import sys

    from genome_index.embedding.backends.checkpoints import own_code_imports

    sys.path.insert(0, str(DOUBLES.parent))
    try:
        with own_code_imports("double"):
            return {name: importlib.import_module(f"doubles.{name[:-3].replace('/', '.')}") for name in files}
    finally:
        sys.path.pop(0)


def dnabert2(folder: Path) -> Path:
    """DNABERT-2 as the Hub lays it out: bert_layers.py and its helpers beside the weights, a
    config.json with `auto_map` but no `model_type`, and without BERT's `pad_token_id`,
    `is_decoder`, `add_cross_attention` (transformers 4's PretrainedConfig supplied them)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    files = ("configuration_bert.py", "bert_layers.py", "bert_padding.py", "flash_attn_triton.py")
    for name in files:
        shutil.copy(DOUBLES / "dnabert2" / name, folder / name)
    module = _import_double(("dnabert2/configuration_bert.py", "dnabert2/bert_layers.py"))
    vocab = bpe_tokenizer(folder).vocab_size
    config = module["dnabert2/configuration_bert.py"].BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
        max_position_embeddings=512, alibi_starting_size=512,
    )  # fmt: skip
    for key, value in {"pad_token_id": 0, "is_decoder": False, "add_cross_attention": False}.items():
        setattr(config, key, value)  # what transformers 4 gave every config
    model = module["dnabert2/bert_layers.py"].BertForMaskedLM(config)
    written = {**config.to_dict(), "architectures": ["BertForMaskedLM"]}
    written["auto_map"] = {
        "AutoConfig": "configuration_bert.BertConfig",
        "AutoModel": "bert_layers.BertModel",
        "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM",
    }
    lacking = ("model_type", "pad_token_id", "is_decoder", "add_cross_attention")
    _save_as_the_hub_does(model, folder, written, drop=lacking)
    return folder


def custom(kind: str, folder: Path, **config: object) -> Path:
    """A checkpoint that runs its own code: its Python files copied beside its weights.
    `config` overrides the HyenaDNA double's config (max_seq_len, vocab_size)."""
    if kind == "dnabert2":
        return dnabert2(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    files = {
        "ntv2": ("ntv2_config.py", "ntv2_modeling.py"),
        "hyenadna": ("hyena_config.py", "hyena_modeling.py"),
        "caduceus": ("caduceus_config.py", "caduceus_modeling.py"),
    }[kind]
    for name in files:
        shutil.copy(DOUBLES / name, folder / name)
    module = _import_double(files)
    if kind == "ntv2":
        for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(BUNDLED["nt-tiny"] / name, folder / name)
        model = module["ntv2_modeling.py"].NTv2ForMaskedLM(module["ntv2_config.py"].NTv2Config())
        auto_map = {"AutoConfig": "ntv2_config.NTv2Config", "AutoModelForMaskedLM": "ntv2_modeling.NTv2ForMaskedLM"}
    elif kind == "hyenadna":
        tokenizer = char_tokenizer(folder, template="eos", max_length=None)
        settings = {"vocab_size": tokenizer.vocab_size, **config}
        model = module["hyena_modeling.py"].HyenaDNAModel(module["hyena_config.py"].HyenaConfig(**settings))
        auto_map = {"AutoConfig": "hyena_config.HyenaConfig", "AutoModel": "hyena_modeling.HyenaDNAModel"}
    else:
        tokenizer = char_tokenizer(folder, template=None, max_length=None)
        model = module["caduceus_modeling.py"].CaduceusModel(
            module["caduceus_config.py"].CaduceusConfig(vocab_size=tokenizer.vocab_size)
        )
        auto_map = {"AutoConfig": "caduceus_config.CaduceusConfig", "AutoModel": "caduceus_modeling.CaduceusModel"}
    _save_as_the_hub_does(model, folder, {**model.config.to_dict(), "auto_map": auto_map})
    return folder


def gpn(folder: Path, layers: int = 3) -> Path:
    """GPN as songlab/gpn-brassicales is, built by PyPI `gpn` 0.9.0a1 itself (not a double): its
    `ConvNet` classes (registered by calling `gpn.register_auto_classes()`, no `auto_map`), one-hot
    input (int64 ids only), blocks in an `nn.Sequential`, no length limit stated anywhere;
    vocabulary a c g t, no N."""
    import gpn
    from gpn.legacy import ConvNetConfig, ConvNetForMaskedLM

    gpn.register_auto_classes("gpn")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = char_tokenizer(folder, alphabet="acgt", template=None, max_length=None)
    torch.manual_seed(0)
    config = ConvNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, n_layers=layers, kernel_size=5)
    ConvNetForMaskedLM(config).save_pretrained(folder)
    return folder
