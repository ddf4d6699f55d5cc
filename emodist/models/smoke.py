"""The bases `--smoke` trains: a randomly initialised checkpoint of the variant's architecture (tiny, or at
the real model's sizes) and a word-level tokenizer over the smoke texts, written to disk so that the same
loading code reads them as it reads a real model.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import torch

from emodist.runtime import files
from emodist.runtime.errors import NoSpace, out_of_space

# The tiny shapes `--smoke` builds, per architecture: small enough to train in seconds on a CPU, with the
# real layer structure (GQA for Gemma/Mistral, DistilBERT's and BERT's own layer names). No dropout: with
# it the tiny encoders need several times more steps to learn the synthetic set.
TINY_SIZES = {
    "distilbert": {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 128, "max_position_embeddings": 128,
                   "dropout": 0.0, "attention_dropout": 0.0},
    # BERT's tanh pooler starves a tiny head at the default init (std 0.02); std 0.1 learns in the same steps
    "bert": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
             "max_position_embeddings": 128, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
             "initializer_range": 0.1},
    "gemma": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
              "head_dim": 16, "intermediate_size": 128, "max_position_embeddings": 128},
    "mistral": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "intermediate_size": 128, "max_position_embeddings": 128},
}


# The real models' shapes (their config.json), for `model.smoke_size=real`: random weights of the true size
REAL_SIZES = {
    "distilbert": {"vocab_size": 30522, "dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072,
                   "max_position_embeddings": 512},  # distilbert-base-uncased
    "bert": {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
             "intermediate_size": 1536, "max_position_embeddings": 512},  # all-MiniLM-L6-v2
    "gemma": {"vocab_size": 256000, "hidden_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 8,
              "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 16384,
              "max_position_embeddings": 8192},  # gemma-1.1-2b-it
    "mistral": {"vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 14336, "max_position_embeddings": 32768,
                "sliding_window": 4096},  # Mistral-7B-v0.1
}


SMOKE_VOCAB_SIZE = 4000


_SMOKE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_smoke_base(architecture: str, texts: list[str], directory: Path, seed: int, size: str = "tiny") -> Path:
    """Write a randomly initialised `architecture` model and a word-level tokenizer to `directory`: tiny, or
    of the real model's sizes (`size="real"`, in bfloat16; its embedding keeps the real vocabulary size).

    The vocabulary is the most frequent words of `texts`, so the tiny model can learn from them.
    Returns `directory` as an absolute path; an existing complete base there is reused.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    directory = directory.resolve()
    if (directory / "config.json").exists():
        return directory
    tokenizer = smoke_tokenizer(texts)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _SMOKE_SPECIALS}
    sizes = {"vocab_size": len(tokenizer), **TINY_SIZES[architecture]} if size == "tiny" else REAL_SIZES[architecture]
    config = AutoConfig.for_model(architecture, pad_token_id=ids["[PAD]"], bos_token_id=ids["[CLS]"],
                                  eos_token_id=ids["[SEP]"], **sizes)
    dtype = torch.float32 if size == "tiny" else torch.bfloat16  # 7B parameters: 14 GiB instead of 29
    default_dtype = torch.get_default_dtype()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            # the class itself, not AutoModel.from_config: under ZeRO-3 that would build inside zero.Init, a
            # collective, while only one rank writes the base
            model = MODEL_MAPPING[type(config)](config)
        finally:
            torch.set_default_dtype(default_dtype)
    tmp = directory.with_name(directory.name + ".tmp")
    try:
        model.save_pretrained(tmp, max_shard_size="5GB")  # in shards, as the hub serves a 7B model
        tokenizer.save_pretrained(tmp)
    except Exception as err:  # a full disk (safetensors' own error among them): no half-written base stays
        shutil.rmtree(tmp, ignore_errors=True)
        if out_of_space(err, tmp.parent):
            raise NoSpace(f"no space left on the disk of {tmp.parent} for the smoke base ({directory.name}): free some "
                          "space, or choose another --output-dir, then run again") from None
        raise
    files.open_to_umask(tmp)
    tmp.rename(directory)
    return directory


def smoke_base_dir(cfg, run_dir: Path, texts: list[str]) -> Path:
    """Where `--smoke` keeps its base: in the run directory (tiny), or, for a real-size one (gigabytes, minutes
    to build), in the cache directory, shared by the runs of the same architecture, seed and vocabulary."""
    if cfg.model.smoke_size == "tiny":
        return run_dir / "smoke-base"
    from emodist.data import fingerprint_texts
    from emodist.runtime.files import cache_root

    key = f"{cfg.model.architecture}-real-seed{cfg.train.seed}-{fingerprint_texts(texts)[:12]}"
    return cache_root(cfg.data.cache_dir) / "smoke-bases" / key


def smoke_tokenizer(texts: list[str]):
    """A lower-casing word-level tokenizer over the most frequent words of `texts` ([CLS] text [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    counts = Counter(word for text in texts for word in re.findall(r"\w+|[^\w\s]", text.lower()))
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:SMOKE_VOCAB_SIZE]
    vocab = {token: i for i, token in enumerate(_SMOKE_SPECIALS + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=TINY_SIZES["bert"]["max_position_embeddings"])
