"""The typed run configuration: its schema (`schema`), what makes it valid (`rules`), how it is loaded from
variant presets, YAML files and dotted overrides (`loading`), and the variant presets (`variants`).

    from emodist import config
    cfg = config.load(variant="gemma-lora", config_file="my.yaml", overrides=["optim.lr=2e-4"], smoke=True)

Imports only `emodist.runtime`; every layer above reads a `RunConfig`.
"""

from emodist.config.loading import Setting, dump, field_docs, load
from emodist.config.rules import valid_shard_size
from emodist.config.schema import (
    DataConfig,
    ExportConfig,
    LoraSettings,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrackConfig,
    TrainConfig,
)

__all__ = ["DataConfig", "ExportConfig", "LoraSettings", "ModelConfig", "OptimConfig", "RunConfig", "Setting",
           "TrackConfig", "TrainConfig", "dump", "field_docs", "load", "valid_shard_size"]
