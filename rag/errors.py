"""The errors the library raises for things a person can fix, gathered for entry points.

The CLI and the UI catch exactly these and show their message; anything else is a bug and keeps
its traceback for the logs.
"""

from rag.embeddings import EmbeddingModelError
from rag.lexical import LexicalIndexError
from rag.llm import LLMUnavailableError
from rag.local_model import ModelIntegrityError, ModelNotInstalledError
from rag.rerank import RerankerError
from rag.settings import SettingsError
from rag.store import IndexError_

USER_ERRORS: tuple[type[Exception], ...] = (SettingsError, IndexError_, LexicalIndexError, EmbeddingModelError,
                                           RerankerError, LLMUnavailableError, ModelNotInstalledError,
                                           ModelIntegrityError)
