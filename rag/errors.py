"""The errors the library raises for things a person can fix, gathered for entry points.

The CLI and the UI catch exactly these and show their message; anything else is a bug and keeps
its traceback for the logs.
"""

from paperchat.rag.embeddings import EmbeddingModelError
from paperchat.rag.lexical import LexicalIndexError
from paperchat.rag.llm import LLMUnavailableError
from paperchat.rag.local_model import ModelIntegrityError, ModelNotInstalledError
from paperchat.rag.rerank import RerankerError
from paperchat.rag.settings import SettingsError
from paperchat.rag.store import IndexError_

USER_ERRORS: tuple[type[Exception], ...] = (
    SettingsError, IndexError_, LexicalIndexError, EmbeddingModelError, RerankerError, LLMUnavailableError,
    ModelNotInstalledError, ModelIntegrityError)
