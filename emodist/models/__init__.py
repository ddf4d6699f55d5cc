"""The model: THE builder every variant goes through (`builder`: tokenizer, quantization, load, k-bit prep,
gradient checkpointing, LoRA), the random bases `--smoke` trains instead of a download (`smoke`), and
what training it needs in memory before any weight is loaded (`shapes` on the meta device, `placement` of
the processes, `memory`: the plan, its verdict and advice), and the forward that takes packed batches
(`packing`).

Imports `emodist.data`, `emodist.config` and `emodist.runtime`. Saving a trained model and reading it back
belong to `emodist.serve.model_dir`.
"""

from emodist.models.builder import (
           DTYPES,
           BuiltModel,
           base_identity,
           base_path,
           build_model,
           compile_blocks,
           count_parameters,
           is_head_parameter,
           readable_tokens,
)
from emodist.models.packing import POOL, accept_packed
from emodist.models.smoke import REAL_SIZES, TINY_SIZES, make_smoke_base, smoke_base_dir, smoke_tokenizer

__all__ = ["DTYPES", "POOL", "REAL_SIZES", "TINY_SIZES", "BuiltModel", "accept_packed", "base_identity", "base_path", "build_model",
           "compile_blocks", "count_parameters", "is_head_parameter", "make_smoke_base", "readable_tokens", "smoke_base_dir",
           "smoke_tokenizer"]
