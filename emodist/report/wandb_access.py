"""Whether and where a run logs to wandb, found as wandb finds it: the mode (track.wandb, WANDB_MODE), the
server (WANDB_BASE_URL, or what `wandb login --host` wrote in wandb's settings file) and an API key for it
(WANDB_API_KEY, an identity token file, or the netrc entry `wandb login` writes). Nothing here imports wandb.

    mode, notice = resolve_mode(cfg.track.wandb)   # ("offline", "no wandb API key ...: logging offline; ...")
"""

from __future__ import annotations

import configparser
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from emodist.runtime.errors import UsageError

WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "off")
"""The WANDB_MODE values wandb (and emodist: `off`) reads; another one failed deep inside wandb's settings."""


def resolve_mode(setting: str) -> tuple[str, str | None]:
    """(online | offline | off, a notice line or None) for track.wandb=`setting`; UsageError for a WANDB_MODE
    that is no wandb mode (checked at the start of a run: `lifecycle.Run.setup`)."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env and env not in WANDB_MODES:
        raise UsageError(f"WANDB_MODE={os.environ['WANDB_MODE']}: not a wandb mode: set it to online, offline or "
                         "disabled, or unset it (track.wandb, or --wandb, chooses then)")
    if env:  # wandb reads it too, in lower case only: `ONLINE` turned tracking off after this said online
        os.environ["WANDB_MODE"] = env
    said = "track.wandb=online"
    if setting == "auto" and env:
        if env in ("disabled", "off"):
            return "off", None
        setting, said = ("offline" if env in ("offline", "dryrun") else "online"), f"WANDB_MODE={env}"
    if setting == "auto":
        setting = "online" if has_credentials() else "offline"
        if setting == "offline":
            return "offline", ("no wandb API key (WANDB_API_KEY or `wandb login`): logging offline; "
                               "upload later with `wandb sync`")
    if setting == "online" and not has_credentials():
        return "offline", f"{said} but no wandb API key is configured: logging offline instead"
    return setting, None


def has_credentials() -> bool:
    """Whether wandb would find an API key without prompting: WANDB_API_KEY, an identity token file, or a
    netrc entry for the wandb host (where `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(wandb_server()).hostname
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_server() -> str:
    """The wandb server a run logs to, as wandb finds it: WANDB_BASE_URL, else the base_url that `wandb login
    --host` wrote into wandb's settings file (WANDB_CONFIG_DIR/settings, default ~/.config/wandb/settings),
    else api.wandb.ai."""
    if url := os.environ.get("WANDB_BASE_URL"):
        return url
    settings = configparser.ConfigParser(interpolation=None)
    try:
        settings.read(Path(os.environ.get("WANDB_CONFIG_DIR") or "~/.config/wandb").expanduser() / "settings",
                      encoding="utf-8")
        url = settings.get("default", "base_url", fallback=None)
    except (configparser.Error, OSError, UnicodeError):  # wandb reads such a file as empty too
        url = None
    return url or "https://api.wandb.ai"
