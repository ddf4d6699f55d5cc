"""The hub probe (`emodist.runtime.hub.go_offline_if_unreachable`) against a local TCP server standing in for the hub."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from emodist.runtime import hub

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def probe_env(monkeypatch):
    """No offline mode and no proxy set: the probe decides."""
    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_hub_that_answers_keeps_the_libraries_online(probe_env):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        probe_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.go_offline_if_unreachable(timeout_s=2) is False
    assert not hub.is_offline()


def test_a_hub_that_does_not_answer_turns_offline_mode_on(probe_env):
    probe_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert hub.go_offline_if_unreachable(timeout_s=2) is True
    assert hub.is_offline()


def test_a_proxy_is_trusted_and_offline_mode_is_kept(probe_env):
    probe_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    probe_env.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub.go_offline_if_unreachable(timeout_s=2) is False  # the direct probe would be wrong behind it
    assert not hub.is_offline()
    probe_env.setenv("HF_HUB_OFFLINE", "1")
    assert hub.go_offline_if_unreachable(timeout_s=2) is True


@pytest.mark.parametrize(("endpoint", "port"), [("https://hub.example", 443), ("http://hub.example", 80),
                                                ("http://hub.example:8080", 8080)])
def test_the_probe_dials_the_endpoint_s_own_port(probe_env, endpoint, port):
    dialled = []

    def connection(address, timeout):
        dialled.append(address)
        raise OSError("not really")

    probe_env.setattr(socket, "create_connection", connection)
    probe_env.setenv("HF_ENDPOINT", endpoint)
    assert hub.go_offline_if_unreachable() is True
    assert dialled == [("hub.example", port)]


@pytest.mark.parametrize("entry", ["predict", "export"])
def test_predict_and_export_probe_the_hub_before_huggingface_hub_is_imported(entry, tmp_path):
    """huggingface_hub reads HF_HUB_OFFLINE once, when it is imported: the probe of predict and of export's
    merge (for an adapter whose base is a hub id) must come first, or an unreachable hub costs every
    download's timeout."""
    import subprocess
    import sys

    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "adapter_config.json").write_text('{"base_model_name_or_path": "google/gemma-1.1-2b-it"}')
    argv = [str(model), "hello"] if entry == "predict" else [str(tmp_path / "run")]
    script = f"""
import runpy, sys
from emodist.runtime import hub
def probe():
    print("imported at the probe:", "huggingface_hub" in sys.modules, "transformers" in sys.modules)
    raise SystemExit(0)
hub.go_offline_if_unreachable = probe
sys.argv = ["launch/{entry}.py", *{argv!r}]
runpy.run_path("launch/{entry}.py", run_name="__main__")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported at the probe: False False" in result.stdout, result.stdout
