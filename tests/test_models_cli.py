"""``enclave models ...`` as a user runs it: every way a model comes in, and proving it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli import enclave as run_enclave
from tests.fake_hub import FakeHub, FakeRepo
from tests.tiny_models import DENSE, write_tiny_model


def enclave(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Online commands may go online here (to the loopback hub): the offline switches are off unless given."""
    return run_enclave(*args, home=home, env={"HF_HUB_OFFLINE": None, "ENCLAVE_OFFLINE": None, **(env or {})})


def test_import_list_verify_export_and_remove(enclave_home: Path, moe_model: Path, tmp_path: Path) -> None:
    imported = enclave("models", "import", str(moe_model), home=enclave_home)
    assert imported.returncode == 0, imported.stderr
    listed = json.loads(enclave("models", "list", "--json", home=enclave_home).stdout)
    (model,) = listed
    assert model["origin"] == "copied" and model["experts"] == 8 and model["quantization"] == "F16"
    assert Path(model["files"][0]["path"]).is_relative_to(enclave_home / "data" / "models")
    verified = enclave("models", "verify", model["id"], home=enclave_home)
    assert verified.returncode == 0 and f"{model['id']}: ok" in verified.stdout
    answer = enclave("run", model["id"], "hi", "--max-tokens", "3", home=enclave_home)
    assert answer.returncode == 0, answer.stderr  # a registered model is named by its id
    stick = tmp_path / "stick"
    assert enclave("models", "export", model["id"], str(stick), home=enclave_home).returncode == 0
    assert (stick / "enclave-manifest.json").exists()
    other = tmp_path / "airgapped"
    brought = enclave("models", "import", str(stick), "--link", home=other)
    assert brought.returncode == 0 and f"Imported {model['id']}" in brought.stdout
    removed = enclave("models", "remove", model["id"], "--delete-files", home=enclave_home)
    assert removed.returncode == 0 and not Path(model["files"][0]["path"]).exists()
    assert moe_model.exists()
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_text("hello")
    refused = enclave("models", "import", str(not_gguf), home=enclave_home)
    assert refused.returncode == 2 and refused.stderr.startswith("enclave: error: ") and "GGUF" in refused.stderr


def test_discover_adds_models_of_other_apps_in_place(enclave_home: Path, dense_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hf" / "hub"
    blob = cache / "models--org--Tiny-GGUF" / "blobs" / "abc123"
    snapshot = cache / "models--org--Tiny-GGUF" / "snapshots" / ("f" * 40) / "tiny-dense.gguf"
    blob.parent.mkdir(parents=True)
    snapshot.parent.mkdir(parents=True)
    blob.write_bytes(dense_model.read_bytes())
    snapshot.symlink_to(blob)
    env = {"HF_HUB_CACHE": str(cache), "HOME": str(tmp_path / "home"), "LLAMA_CACHE": str(tmp_path / "none"),
           "OLLAMA_MODELS": str(tmp_path / "none")}
    found = enclave("models", "discover", home=enclave_home, env=env)
    assert found.returncode == 0 and "org/Tiny-GGUF" in found.stdout and "not registered" in found.stdout
    added = enclave("models", "discover", "--add", home=enclave_home, env=env)
    assert added.returncode == 0 and "added as tiny-dense-" in added.stdout, added.stdout + added.stderr
    (model,) = json.loads(enclave("models", "list", "--json", home=enclave_home).stdout)
    assert model["origin"] == "discovered" and model["source"]["repo"] == "org/Tiny-GGUF"
    again = enclave("models", "discover", "--add", home=enclave_home, env=env)  # known by its snapshot link
    assert again.returncode == 0 and f"registered as {model['id']}" in again.stdout, again.stdout
    assert "not added" not in again.stdout  # not hashed again only to be refused


def test_pull_downloads_verifies_and_registers(enclave_home: Path, tmp_path: Path) -> None:
    data = write_tiny_model(tmp_path / "t.gguf", DENSE).read_bytes()
    with FakeHub() as hub:
        hub.add(FakeRepo("org/Tiny-GGUF", {"tiny-Q8_0.gguf": data, "tiny-Q4_K_M.gguf": data[:-1] + b"\0"}))
        env = {"HF_ENDPOINT": hub.url}
        pulled = enclave("models", "pull", "org/Tiny-GGUF", "--quant", "Q8_0", home=enclave_home, env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert "Downloaded and verified" in pulled.stdout
        (model,) = json.loads(enclave("models", "list", "--json", home=enclave_home).stdout)
        assert model["origin"] == "downloaded" and model["source"]["repo"] == "org/Tiny-GGUF"
        assert model["source"]["files"] == ["tiny-Q8_0.gguf"]
        searched = enclave("models", "search", "tiny", home=enclave_home, env=env)
        assert searched.returncode == 0 and "org/Tiny-GGUF" in searched.stdout
        offline = enclave("models", "pull", "org/Tiny-GGUF", home=enclave_home,
                          env={**env, "ENCLAVE_OFFLINE": "1"})
        assert offline.returncode == 2 and "offline" in offline.stderr.lower()
        assert len([r for r in hub.requests if r.method == "GET"]) >= 2


def test_catalog_judges_this_machine_without_network(enclave_home: Path) -> None:
    result = enclave("models", "catalog", "--vram", "24GiB", "--ram", "64GiB", "--json", home=enclave_home)
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert entries["Qwen3-30B-A3B"]["fits"] is True and entries["Qwen3-30B-A3B"]["size_known"] is True
    assert entries["Qwen3-235B-A22B"]["fits"] is False
    assert entries["gpt-oss-120b"]["largest_context"] > 0


def test_a_vision_model_comes_in_with_its_projector_and_says_it_reads_images(enclave_home: Path, dense_model: Path,
                                                                           projector: Path, tmp_path: Path) -> None:
    from tests.tiny_projector import write_tiny_projector

    other = write_tiny_projector(tmp_path / "mmproj-other.gguf", text_model_embd=64)
    refused = enclave("models", "import", str(dense_model), "--mmproj", str(other), home=enclave_home)
    assert refused.returncode != 0 and "belongs to another model" in refused.stderr
    assert "Traceback" not in refused.stderr
    imported = enclave("models", "import", str(dense_model), "--mmproj", str(projector), home=enclave_home)
    assert imported.returncode == 0, imported.stderr
    assert "reads images (gemma3 projector, 16 tokens an image)" in imported.stdout
    (model,) = json.loads(enclave("models", "list", "--json", home=enclave_home).stdout)
    assert model["projector"]["projector_type"] == "gemma3"
    assert "reads images (gemma3 projector, 16 tokens an image)" in enclave("models", "list", home=enclave_home).stdout
    shown = enclave("inspect", model["id"], home=enclave_home).stdout
    assert "images          reads images (gemma3 projector, 16 tokens an image)" in shown
    planned = enclave("plan", model["id"], "--vram", "8GiB", "--ram", "16GiB", "--no-speed", home=enclave_home)
    assert planned.returncode == 0, planned.stderr
    assert "Projector " in planned.stdout and "on GPU0; each image takes ~16 tokens of the context" in planned.stdout
    detached = enclave("models", "detach-projector", model["id"], home=enclave_home)
    assert detached.returncode == 0 and "reads text only now" in detached.stdout
    assert not Path(model["projector"]["path"]).exists()  # Enclave's copy goes
    assert "reads images" not in enclave("models", "list", home=enclave_home).stdout
    attached = enclave("models", "attach-projector", model["id"], str(projector), "--in-place", home=enclave_home)
    assert attached.returncode == 0 and f"{model['id']} reads images" in attached.stdout
