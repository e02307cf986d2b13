"""Vision projectors (mmproj) in the registry, discovery, the planner and loads (issue 20, part 1)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from app.discovery import LM_STUDIO, OLLAMA, discover
from app.models import ModelRegistry
from app.profiles import ModelProfile, VisionProjector, load_request
from app.settings import Settings
from app.store import open_store
from app.transfer import export_model, import_folder
from inference.devices import GiB, simulated_machine
from inference.errors import EnclaveError, GGUFError
from inference.gguf_info import inspect_gguf
from inference.planner import RAM_DEVICE, PlanRequest, ProjectorSize, apply_plan, plan, projector_size
from inference.projector_info import read_projector
from inference.protocol import ModelSettings
from tests.model_shapes import real_shapes
from tests.tiny_projector import TOKENS_PER_IMAGE, write_tiny_projector

MiB = 2**20


def write_projector(path: Path, *, kind: str = "gemma3", image: int = 896, patch: int = 14, projection: int = 4096,
                    scale: int | None = 4, vision: bool = True, weights: int = 1024) -> Path:
    """A projector's metadata with a tensor of ``weights`` f32 values: enough for everything but libmtmd."""
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_string("clip.projector_type", kind)
    writer.add_bool("clip.has_vision_encoder", vision)
    writer.add_bool("clip.has_audio_encoder", not vision)
    writer.add_uint32("clip.vision.image_size", image)
    writer.add_uint32("clip.vision.patch_size", patch)
    writer.add_uint32("clip.vision.embedding_length", 1152)
    writer.add_uint32("clip.vision.feed_forward_length", 4304)
    writer.add_uint32("clip.vision.attention.head_count", 16)
    writer.add_uint32("clip.vision.block_count", 27)
    writer.add_uint32("clip.vision.projection_dim", projection)
    if scale is not None:
        writer.add_uint32("clip.vision.projector.scale_factor", scale)
    writer.add_tensor("mm.input_projection.weight", np.zeros(weights, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def registry(tmp_path: Path):
    with open_store(tmp_path / "db" / "enclave.db") as store:
        yield ModelRegistry(store, tmp_path / "models")


@pytest.fixture
def vision_folder(tmp_path: Path, dense_model: Path, projector: Path) -> Path:
    folder = tmp_path / "download"
    folder.mkdir()
    shutil.copy(dense_model, folder / "tiny-dense.gguf")
    shutil.copy(projector, folder / "mmproj-tiny-f16.gguf")
    return folder


# What a projector is ---------------------------------------------------------------------------------


def test_a_gemma3_projector_is_read_with_its_image_tokens(tmp_path: Path, projector: Path) -> None:
    info = read_projector(write_projector(tmp_path / "mmproj-gemma3.gguf"))
    assert (info.projector_type, info.image_size, info.patch_size, info.merge) == ("gemma3", 896, 14, 4)
    assert info.tokens_per_image == 256 and not info.tokens_estimated  # (896 / 14)² / 4²
    assert info.weights_bytes == 4096 and info.size == (tmp_path / "mmproj-gemma3.gguf").stat().st_size
    assert info.fits_text_model(4096) and not info.fits_text_model(2560)
    assert info.describe() == "gemma3 projector, 256 tokens an image"
    tiny = read_projector(projector)
    assert tiny.tokens_per_image == TOKENS_PER_IMAGE and tiny.fits_text_model(128)


def test_resolution_following_and_tiling_projectors_give_an_upper_estimate(tmp_path: Path) -> None:
    qwen = read_projector(write_projector(tmp_path / "q.gguf", kind="qwen2.5vl_merger", image=560, scale=None))
    assert qwen.merge == 2 and qwen.tokens_estimated and qwen.tokens_per_image == 37 * 37  # 1024 px / 28
    smol = read_projector(write_projector(tmp_path / "s.gguf", kind="idefics3", image=512, patch=16, scale=4))
    assert smol.tokens_estimated and smol.tokens_per_image == 64 * 5  # 2×2 tiles and the overview, 64 each
    assert smol.describe() == "idefics3 projector, up to ~320 tokens an image"


def test_what_is_not_a_projector_is_refused_in_words(tmp_path: Path, dense_model: Path, projector: Path) -> None:
    with pytest.raises(GGUFError, match="not a vision projector"):
        read_projector(dense_model)
    with pytest.raises(GGUFError, match=r"is a vision projector .mmproj., not a language model.*--mmproj"):
        inspect_gguf(projector)
    cut = tmp_path / "mmproj-cut.gguf"
    cut.write_bytes(projector.read_bytes()[:200])
    with pytest.raises(GGUFError):
        read_projector(cut)


# The registry ------------------------------------------------------------------------------------------


def test_import_with_a_projector_copies_hashes_and_describes_it(registry: ModelRegistry, dense_model: Path,
                                                                 projector: Path) -> None:
    model = registry.import_files([dense_model], "copy", projector=projector)
    assert model.reads_images and model.projector is not None
    assert registry.owns(Path(model.projector.path)) and Path(model.projector.path).parent == model.path.parent
    assert model.projector.sha256 == hashlib.sha256(projector.read_bytes()).hexdigest()
    assert model.projector.describe() == f"reads images (gemma3 projector, {TOKENS_PER_IMAGE} tokens an image)"
    assert len(model.files) == 1 and model.path.name == "tiny-dense.gguf"  # the weights stay the weights
    assert registry.find(model.projector.path) is None  # a projector is never a model of its own
    assert registry.projector_path(model.id) == model.projector.path
    assert registry.projector_size(model.id).tokens_per_image == TOKENS_PER_IMAGE  # type: ignore[union-attr]


def test_a_projector_of_another_model_is_refused_before_anything_is_copied(registry: ModelRegistry, tmp_path: Path,
                                                                           dense_model: Path) -> None:
    other = write_tiny_projector(tmp_path / "mmproj-other.gguf", text_model_embd=64)
    with pytest.raises(EnclaveError, match="belongs to another model: it makes image embeddings 64 wide, and "
                                           "tiny-dense reads embeddings 128 wide"):
        registry.import_files([dense_model], "copy", projector=other)
    assert registry.all() == [] and not (tmp_path / "models").exists()
    audio = write_projector(tmp_path / "mmproj-audio.gguf", kind="ultravox", vision=False, projection=128)
    model = registry.import_files([dense_model], "in_place")
    with pytest.raises(EnclaveError, match="audio projector"):
        registry.attach_projector(model, audio)


def test_a_folder_import_attaches_the_mmproj_beside_the_model(registry: ModelRegistry, vision_folder: Path) -> None:
    report = import_folder(registry, vision_folder, "link")
    assert report.refused == []
    (model,) = report.imported
    assert model.projector is not None and Path(model.projector.path).is_symlink()
    assert Path(model.projector.path).resolve() == (vision_folder / "mmproj-tiny-f16.gguf").resolve()
    assert [m.id for m in registry.all()] == [model.id]


def test_a_folder_whose_projector_does_not_fit_still_brings_the_model(registry: ModelRegistry, tmp_path: Path,
                                                                      dense_model: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(dense_model, folder / "tiny-dense.gguf")
    write_tiny_projector(folder / "mmproj-other.gguf", text_model_embd=64)
    report = import_folder(registry, folder, "in_place")
    (model,) = report.imported
    assert model.projector is None
    ((name, why),) = report.refused
    assert name.endswith("mmproj-other.gguf") and "belongs to another model" in why


def test_verify_sees_a_changed_projector_and_remove_deletes_its_copy(registry: ModelRegistry, dense_model: Path,
                                                                     projector: Path) -> None:
    model = registry.import_files([dense_model], "copy", projector=projector)
    assert registry.verify(model).ok
    copy = Path(model.projector.path)  # type: ignore[union-attr]
    copy.write_bytes(copy.read_bytes()[:-1] + b"\x01")
    result = registry.verify(model)
    assert not result.ok and str(copy) in result.problems[0] and "changed or damaged" in result.problems[0]
    registry.remove(model, delete_files=True)
    assert not copy.exists() and not model.path.exists() and projector.exists()


def test_attach_and_detach_a_projector_of_a_model_already_registered(registry: ModelRegistry, dense_model: Path,
                                                                     projector: Path) -> None:
    model = registry.import_files([dense_model], "in_place")
    assert not model.reads_images
    attached = registry.attach_projector(model, projector, "in_place")
    assert attached.projector is not None and attached.projector.path == str(projector)
    with pytest.raises(EnclaveError, match="already has a projector"):
        registry.attach_projector(attached, projector, "in_place")
    assert registry.detach_projector(attached) == str(projector)  # not Enclave's file: kept where it is
    assert not registry.get(model.id).reads_images and projector.exists()
    copied = registry.attach_projector(registry.get(model.id), projector, "copy")
    assert registry.owns(Path(copied.projector.path))  # type: ignore[union-attr]
    assert registry.detach_projector(copied) is None and not Path(copied.projector.path).exists()  # type: ignore


def test_export_and_import_across_an_air_gap_carries_the_projector(registry: ModelRegistry, tmp_path: Path,
                                                                   dense_model: Path, projector: Path) -> None:
    model = registry.import_files([dense_model], "copy", projector=projector)
    stick = tmp_path / "stick"
    manifest = json.loads(export_model(registry, model, stick).read_text())
    assert manifest["models"][0]["projector"]["name"] == "mmproj-tiny.gguf"
    assert (stick / "mmproj-tiny.gguf").read_bytes() == projector.read_bytes()
    with open_store(tmp_path / "other" / "enclave.db") as store:
        there = ModelRegistry(store, tmp_path / "other-models")
        (brought,) = import_folder(there, stick, "copy").imported
        assert brought.projector is not None and brought.projector.sha256 == model.projector.sha256  # type: ignore
        (stick / "mmproj-tiny.gguf").write_bytes(b"GGUF" + projector.read_bytes()[4:-1] + b"\x02")
        there.remove(brought, delete_files=True)
        report = import_folder(there, stick, "copy")
        assert report.imported == [] and "SHA-256" in report.refused[0][1]
        assert there.all() == []


def test_two_models_whose_projectors_share_a_name_do_not_overwrite_each_other(
        registry: ModelRegistry, tmp_path: Path, dense_model: Path, moe_model: Path) -> None:
    """Many repositories call their projector mmproj-F16.gguf: the second export into the same
    folder is refused instead of replacing the first model's projector."""
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir(), second_dir.mkdir()
    first = registry.import_files([dense_model], "copy",
                                  projector=write_tiny_projector(first_dir / "mmproj-F16.gguf", seed=1))
    second = registry.import_files([moe_model], "copy",
                                   projector=write_tiny_projector(second_dir / "mmproj-F16.gguf", seed=2))
    stick = tmp_path / "stick"
    export_model(registry, first, stick)
    with pytest.raises(EnclaveError, match=r"already holds mmproj-F16.gguf of tiny-dense.*into another folder"):
        export_model(registry, second, stick)
    assert hashlib.sha256((stick / "mmproj-F16.gguf").read_bytes()).hexdigest() == first.projector.sha256  # type: ignore
    export_model(registry, first, stick)  # the same model again: its own files, no clash


# Discovery ---------------------------------------------------------------------------------------------


def test_discovery_finds_the_projector_other_apps_keep_beside_the_model(tmp_path: Path, dense_model: Path,
                                                                        projector: Path, registry: ModelRegistry
                                                                        ) -> None:
    lm_studio = tmp_path / "lmstudio" / "lmstudio-community" / "tiny-GGUF"
    lm_studio.mkdir(parents=True)
    shutil.copy(dense_model, lm_studio / "tiny-dense-Q4_K_M.gguf")
    shutil.copy(projector, lm_studio / "mmproj-tiny-BF16.gguf")
    shutil.copy(projector, lm_studio / "mmproj-tiny-F16.gguf")
    ollama = tmp_path / "ollama"
    blobs = ollama / "blobs"
    blobs.mkdir(parents=True)
    digests = {}
    for name, source in (("model", dense_model), ("projector", projector)):
        digest = hashlib.sha256(source.read_bytes() + name.encode()).hexdigest()
        shutil.copy(source, blobs / f"sha256-{digest}")
        digests[name] = f"sha256:{digest}"
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "tinyvision" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": digests["model"]},
        {"mediaType": "application/vnd.ollama.image.projector", "digest": digests["projector"]}]}))

    found = discover({LM_STUDIO: [tmp_path / "lmstudio"], OLLAMA: [ollama]})
    assert [(f.app, f.name) for f in found] == [(LM_STUDIO, "lmstudio-community/tiny-GGUF: tiny-dense-Q4_K_M"),
                                               (OLLAMA, "tinyvision:latest")]
    assert found[0].projector == lm_studio / "mmproj-tiny-F16.gguf"  # the f16 one of several
    assert found[1].projector == blobs / digests["projector"].replace(":", "-")
    added = registry.register_found(found[0])  # the same bytes as Ollama's blob: one of them can be registered
    assert added.reads_images and added.origin == "discovered"
    assert added.projector.path == str(lm_studio / "mmproj-tiny-F16.gguf")  # type: ignore[union-attr]


# The planner -------------------------------------------------------------------------------------------

GEMMA_PROJECTOR = ProjectorSize(weights_bytes=851 * 10**6, compute_bytes=300 * MiB, tokens_per_image=256)


def test_the_plan_puts_the_projector_on_the_first_gpu_and_counts_its_memory() -> None:
    shape = real_shapes()["Llama-3.1-8B"]
    machine = simulated_machine([24 * GiB, 24 * GiB], 64 * GiB)
    without = plan(shape, machine, PlanRequest(n_ctx=8192))
    with_it = plan(shape, machine, PlanRequest(n_ctx=8192, projector=GEMMA_PROJECTOR))
    first = with_it.devices[0]
    assert with_it.projector_device == first.device and first.projector_bytes == GEMMA_PROJECTOR.total_bytes
    assert sum(d.total_bytes for d in with_it.devices) == sum(d.total_bytes for d in without.devices) \
        + GEMMA_PROJECTOR.total_bytes
    assert with_it.projector_words() == f"Projector 1.1 GiB on {first.label}"
    assert with_it.image_words() == "each image takes ~256 tokens of the context (3.1% of 8,192)"
    settings = apply_plan(ModelSettings(path="m.gguf", projector_path="p.gguf"), with_it)
    assert settings.projector_gpu and settings.projector_path == "p.gguf"
    assert with_it.as_dict()["projector"] == {"device": first.device, "bytes": GEMMA_PROJECTOR.total_bytes,
                                              "tokens_per_image": 256, "tokens_estimated": False}


def test_without_a_usable_gpu_the_projector_goes_to_ram_and_can_tip_the_plan() -> None:
    shape = real_shapes()["Llama-3.1-8B"]
    cpu = plan(shape, simulated_machine(None, 64 * GiB), PlanRequest(n_ctx=8192, projector=GEMMA_PROJECTOR))
    assert cpu.projector_device == RAM_DEVICE and cpu.ram.projector_bytes == GEMMA_PROJECTOR.total_bytes
    assert not apply_plan(ModelSettings(path="m"), cpu).projector_gpu
    tight = plan(shape, simulated_machine(None, 64 * GiB), PlanRequest(n_ctx=8192))
    squeezed = simulated_machine(None, tight.ram.total_bytes + GiB + GEMMA_PROJECTOR.total_bytes // 2)
    assert plan(shape, squeezed, PlanRequest(n_ctx=8192)).fits
    assert not plan(shape, squeezed, PlanRequest(n_ctx=8192, projector=GEMMA_PROJECTOR)).fits
    full_gpu = plan(shape, simulated_machine(8 * GiB, 64 * GiB), PlanRequest(projector=GEMMA_PROJECTOR))
    alone = plan(shape, simulated_machine(8 * GiB, 64 * GiB), PlanRequest())
    assert full_gpu.n_ctx < alone.n_ctx  # the largest context that fits makes room for it


def test_projector_size_from_a_real_file(tmp_path: Path) -> None:
    info = read_projector(write_projector(tmp_path / "mmproj.gguf"))
    size = projector_size(info)
    assert size.weights_bytes == info.weights_bytes and size.tokens_per_image == 256
    assert size.compute_bytes > 16 * 4096 * 4096 * 4  # the attention scores of 64×64 patches, in f32


# Loading -----------------------------------------------------------------------------------------------


def test_load_request_carries_the_projector_unless_the_profile_turns_vision_off() -> None:
    vision = VisionProjector("/models/mmproj.gguf", GEMMA_PROJECTOR)
    request = load_request(ModelProfile(), Settings(), projector=vision)
    assert request.settings.projector_path == "/models/mmproj.gguf"
    assert request.planned is not None and request.planned.projector == GEMMA_PROJECTOR
    off = load_request(ModelProfile(vision=False), Settings(), projector=vision)
    assert off.settings.projector_path is None and off.planned is not None and off.planned.projector is None
    by_hand = load_request(ModelProfile(n_gpu_layers=0), Settings(), projector=vision)
    assert by_hand.settings.projector_path == "/models/mmproj.gguf" and not by_hand.settings.projector_gpu
    assert ModelProfile.from_json(ModelProfile(vision=False).to_json()).vision is False


def test_the_runtime_reads_the_registered_projector_for_a_load(services, dense_model: Path, projector: Path) -> None:
    model = services.models.import_files([dense_model], "in_place", projector=projector)
    services.runtime.projectors = services.models.projector_path  # what Services passes it
    found = services.runtime.projector_for(model.id, ModelProfile())
    assert found is not None and found.path == str(projector) and found.size.tokens_per_image == TOKENS_PER_IMAGE
    assert services.runtime.projector_for(model.id, ModelProfile(vision=False)) is None
    request = services.runtime._profile_request(model.id, ModelProfile(), services.current_settings(), None, None)
    assert request.settings.projector_path == str(projector)
    assert replace(request.planned, projector=None) != request.planned
