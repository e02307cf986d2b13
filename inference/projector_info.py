"""What a vision projector (``mmproj-*.gguf``) is, read without llama.cpp.

A projector is the part of a vision model that turns an image into embeddings the language
model reads as tokens: llama.cpp's multimodal library (libmtmd) loads it beside the model.
Its GGUF says ``general.architecture = "clip"``; ``read_projector`` validates the file as
``gguf_info`` validates a model (``read_gguf``) and reads what the registry and the planner
need: the projector type, the encoders it has, the image and patch sizes, the merge factor,
the width it hands the language model (``projection_dim``, which must be the model's
embedding length), its weights and an estimate of the tokens one image takes.

Image tokens. A fixed-size projector resizes every image to ``image_size`` and gives
``(image_size / patch_size)² / merge²`` tokens (Gemma 3: (896 / 14)² / 4² = 256). Others
take an image at its own resolution (Qwen2-VL and its successors, Pixtral, Kimi-VL, LFM2)
or cut it into tiles of ``image_size`` plus an overview (Idefics3/SmolVLM, Llama 4, InternVL,
MiniCPM-V, LLaVA-1.6 with grid points): for those ``tokens_per_image`` is an upper estimate
for an image of up to ``DYNAMIC_IMAGE_SIDE`` pixels a side (``tokens_estimated`` is True), at
most ``MAX_TILES`` tiles and the overview. A larger image takes more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from inference.errors import GGUFError
from inference.gguf_header import DAMAGED
from inference.gguf_info import PROJECTOR_ARCHITECTURE, GGUFContents, Scalar, read_gguf

DYNAMIC_IMAGE_SIDE = 1024  # the image side (pixels) the estimate for resolution-following projectors assumes
MAX_TILES = 9  # tiles of a tiling projector counted at most, besides its overview
# Projectors that take an image at its own resolution (tokens grow with its pixels).
DYNAMIC = frozenset({"qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger", "pixtral", "kimivl", "lfm2",
                     "glm4v", "cogvlm"})
# Projectors that cut a large image into tiles of ``image_size`` and add an overview.
TILED = frozenset({"idefics3", "llama4", "internvl", "resampler", "minicpmv4_6"})
# llama.cpp's merge factor when the file does not say (clip.cpp, load_hparams).
DEFAULT_MERGE = {"gemma3": 4, "qwen2vl_merger": 2, "qwen2.5vl_merger": 2, "qwen3vl_merger": 2, "llama4": 2,
                 "internvl": 2, "kimivl": 2, "lfm2": 2, "idefics3": 3, "glm4v": 2}
# Older LLaVA-style projectors whose projection_dim is the vision model's own, not the output
# width: their output is read from the projection tensors' shapes.
LEGACY_OUTPUT = frozenset({"mlp", "mlp_norm", "ldp", "ldpv2", "resampler", "adapter"})
MINICPMV_QUERIES = 64  # the resampler's output tokens per slice when the file does not say


@dataclass(frozen=True)
class ProjectorInfo:
    path: Path
    size: int  # the file's bytes
    name: str
    projector_type: str
    has_vision: bool
    has_audio: bool
    image_size: int
    patch_size: int
    merge: int  # patches per side merged into one token (1: none)
    embedding_length: int  # the vision encoder's width
    projection_dim: int  # the width of what it hands the language model
    output_dims: frozenset[int]  # every width the output could have (see ``LEGACY_OUTPUT``)
    feed_forward_length: int
    head_count: int
    block_count: int
    weights_bytes: int
    tokens_per_image: int
    tokens_estimated: bool  # True: an upper estimate (a resolution-following or tiling projector)

    @property
    def reads_images(self) -> bool:
        return self.has_vision and self.tokens_per_image > 0

    def fits_text_model(self, n_embd: int) -> bool:
        """Whether this projector's output is as wide as the language model's embeddings:
        libmtmd refuses a projector of another model."""
        return n_embd in self.output_dims

    def refusal(self, n_embd: int, model: str) -> str | None:
        """Why this projector cannot be used with ``model`` (None: it can), in words."""
        if not self.has_vision:
            return (f"{self.path.name} is an audio projector ({self.projector_type}); Enclave reads images only, "
                    "so it was not attached.")
        if not self.fits_text_model(n_embd):
            return (f"{self.path.name} belongs to another model: it makes image embeddings {self.projection_dim} "
                    f"wide, and {model} reads embeddings {n_embd} wide. Use the mmproj file published with "
                    f"{model}.")
        return None

    @property
    def compute_bytes(self) -> int:
        """An estimate of the encoder's graph buffer for one image (or one tile): the
        activations of one block and its attention scores in f32, as without flash attention."""
        positions = self.positions
        activations = positions * (4 * self.embedding_length + self.feed_forward_length) * 4 * 2
        scores = max(self.head_count, 1) * positions * positions * 4
        return activations + scores

    @property
    def positions(self) -> int:
        """Patches one encoder pass sees: a tile, or the image of the estimate."""
        if not self.patch_size or not self.image_size:
            return 0
        side = DYNAMIC_IMAGE_SIDE if self.projector_type in DYNAMIC else self.image_size
        return math.ceil(side / self.patch_size) ** 2

    def describe(self) -> str:
        """ "gemma3 projector, 256 tokens an image" (about, up to … for an estimate)."""
        if not self.reads_images:
            return f"{self.projector_type} projector (no image encoder)"
        return f"{self.projector_type} projector, {tokens_words(self.tokens_per_image, self.tokens_estimated)}"


def tokens_words(tokens: int, estimated: bool) -> str:
    """ "256 tokens an image", or "up to ~2,448 tokens an image" for an estimate."""
    return f"{'up to ~' if estimated else ''}{tokens:,} tokens an image"


def read_projector(path: Path | str) -> ProjectorInfo:
    """Validate ``path`` as a GGUF and read it as a projector; raises ``GGUFError`` (a file
    that is not one says so)."""
    contents = read_gguf(path)
    arch = contents.metadata.get("general.architecture")
    if arch != PROJECTOR_ARCHITECTURE:
        raise GGUFError(f"{contents.path}: this is not a vision projector (its architecture is {arch!r}, a "
                        f"projector's is {PROJECTOR_ARCHITECTURE!r}). Choose the model's mmproj-*.gguf file.")
    return _projector(contents)


def _projector(contents: GGUFContents) -> ProjectorInfo:
    meta = contents.metadata

    def number(key: str, default: int = 0) -> int:
        value = meta.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1 << 32:
            raise GGUFError(f"{contents.path}: the metadata '{key}' should be a size but is {value!r}. {DAMAGED}")
        return int(value)

    kind = _text(meta, "clip.vision.projector_type") or _text(meta, "clip.projector_type")
    if not kind:
        raise GGUFError(f"{contents.path}: this projector does not say its type ('clip.projector_type'). {DAMAGED}")
    has_vision = bool(meta.get("clip.has_vision_encoder", False))
    has_audio = bool(meta.get("clip.has_audio_encoder", False))
    image_size, patch_size = number("clip.vision.image_size"), number("clip.vision.patch_size")
    if has_vision and (not image_size or not patch_size or patch_size > image_size):
        raise GGUFError(f"{contents.path}: the image size ({image_size}) and patch size ({patch_size}) of this "
                        f"projector cannot be. {DAMAGED}")
    merge = (number("clip.vision.projector.scale_factor") or number("clip.vision.spatial_merge_size")
             or DEFAULT_MERGE.get(kind, 1))
    projection_dim = number("clip.vision.projection_dim")
    dims = {projection_dim}
    if kind in LEGACY_OUTPUT:
        dims |= {d for t in contents.tensors if t.name.startswith(("mm.", "mm_", "resampler.")) for d in t.shape}
    tokens, estimated = (_tokens(kind, image_size, patch_size, merge, number("clip.minicpmv_query_num"))
                         if has_vision else (0, False))
    return ProjectorInfo(
        path=contents.path, size=contents.size, name=_text(meta, "general.name") or contents.path.stem,
        projector_type=kind, has_vision=has_vision, has_audio=has_audio, image_size=image_size,
        patch_size=patch_size, merge=max(merge, 1), embedding_length=number("clip.vision.embedding_length"),
        projection_dim=projection_dim, output_dims=frozenset(d for d in dims if d),
        feed_forward_length=number("clip.vision.feed_forward_length"),
        head_count=number("clip.vision.attention.head_count"), block_count=number("clip.vision.block_count"),
        weights_bytes=sum(t.n_bytes for t in contents.tensors), tokens_per_image=tokens, tokens_estimated=estimated)


def _text(meta: dict[str, Scalar], key: str) -> str:
    value = meta.get(key)
    return value.strip() if isinstance(value, str) else ""


def _tokens(kind: str, image_size: int, patch_size: int, merge: int, queries: int) -> tuple[int, bool]:
    """(tokens one image takes, whether that is an upper estimate); see the module's docstring."""
    merge = max(merge, 1)
    if kind in DYNAMIC:
        per_side = math.ceil(DYNAMIC_IMAGE_SIDE / (patch_size * merge))
        rows = per_side if kind == "pixtral" else 0  # Pixtral ends each row of patches with a break token
        return per_side * per_side + rows, True
    if kind in ("resampler", "minicpmv4_6"):  # a fixed number of queries per slice
        per_tile = queries or MINICPMV_QUERIES
    else:
        per_tile = (image_size // patch_size) ** 2 // (merge * merge)
    if kind in TILED:
        tiles = min(math.ceil(DYNAMIC_IMAGE_SIDE / image_size) ** 2, MAX_TILES)
        return per_tile * (tiles + 1 if tiles > 1 else 1), tiles > 1
    return per_tile, False
