"""paperchat's one settings tree.

Precedence: explicit arguments (CLI flags) > `PAPERCHAT_*` environment variables (`__` nests:
`PAPERCHAT_RETRIEVAL__TOP_K=20`) > `paperchat.toml` > the defaults below. Unknown keys are
rejected. Secrets are `SecretStr` and come from the environment only; a key written in the
TOML file is refused so that it never ends up in a file that gets shared.

    >>> s = Settings.load(overrides={"retrieval": {"top_k": 7}})
    >>> s.retrieval.top_k, s.llm.backend
    (7, 'local')
"""

from __future__ import annotations

import os
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_data_dir
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

DEFAULT_CONFIG_FILE = Path("paperchat.toml")
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
# Who writes an answer: the one list the settings, the chain and the command line share.
Answerer = Literal["extractive", "local", "openai", "ollama"]


def default_index_dir() -> Path:
    """Where the index lives unless `--index` or `store.index_dir` says otherwise."""
    return Path(user_data_dir("paperchat", appauthor=False)) / "index"


class SettingsError(ValueError):
    """The settings file or environment holds something paperchat cannot use."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EmbeddingSettings(Section):
    model: str = Field(
        DEFAULT_EMBEDDING_MODEL, description="sentence-transformers model: the packaged all-MiniLM-L6-v2 by "
        "default, or a folder path, or a hub name where the network allows")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto: GPU when present, else CPU")
    batch_size: int = Field(32, ge=1, le=4096, description="texts embedded per forward pass")
    backend: Literal["torch", "onnx", "openvino"] = Field(
        "torch", description="sentence-transformers inference back-end")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="documents embedded in bfloat16 (torch on a CPU) or float32; auto: bfloat16 "
        "where the CPU has AMX or AVX512-BF16 (1.9-2.4x the rate, cosine 0.99998 to float32), else float32")


class ChunkSettings(Section):
    max_tokens: int = Field(230, ge=32, le=8192, description="chunk size in model tokens, title included; "
                            "must fit the embedding model's window (256 for the default)")
    overlap_sentences: int = Field(
        1, ge=0, le=5, description="sentences repeated between neighbouring chunks")


class IngestSettings(Section):
    max_record_bytes: int = Field(
        200_000, ge=1_000, description="longest record read (a JSON line, a CSV row, a listing line); a "
        "longer one is rejected without being parsed")
    max_title_chars: int = Field(
        300, ge=20, description="longer titles are clipped (with a note), so that the abstract stays inside "
        "the embedding window")


class StoreSettings(Section):
    @field_validator("index_dir", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    index_dir: Path = Field(
        default_factory=default_index_dir, description="folder holding the Chroma data and the lexical index "
        "(default: the user data directory)")
    collection: str = Field("paperchat", description="Chroma collection name")
    chroma_host: str | None = Field(
        None, description="Chroma server host; unset = embedded Chroma in index_dir")
    chroma_port: int = Field(8000, ge=1, le=65535, description="Chroma server port")
    chroma_ssl: bool = Field(False, description="use https to reach the Chroma server")


class RetrievalSettings(Section):
    top_k: int = Field(
        10, ge=1, le=200, description="papers shown for a question (list questions may cite more)")
    candidates: int = Field(150, ge=5, le=1000, description="chunks fetched from each index before fusion")
    dense_weight: float = Field(1.0, ge=0, description="weight of the dense (embedding) ranking in fusion")
    lexical_weight: float = Field(1.0, ge=0, description="weight of the lexical (BM25) ranking in fusion")
    fusion: Literal["zscore", "rrf"] = Field("zscore", description="how dense and BM25 scores combine: "
                                             "standardised scores (zscore) or reciprocal ranks (rrf)")
    rrf_k: int = Field(60, ge=1, description="reciprocal-rank-fusion constant (fusion = rrf)")
    year_min: int | None = Field(None, description="only papers from this year on")
    year_max: int | None = Field(None, description="only papers up to this year")
    include_undated: bool = Field(
        True, description="a year filter keeps papers without a year (most listing pages carry no date); "
        "false drops them, and with no bounds keeps only dated papers")
    reranker_path: Path | None = Field(
        None, description="local sentence-transformers CrossEncoder folder; unset = off")
    key_terms: int = Field(
        3, ge=1, le=20, description="how many of the question's rarest slots (a term, or a group of "
        "alternatives like \"X or Y\") are its key terms")
    match_threshold: float = Field(
        0.1, ge=0, le=1, description="the judge's probability from which a paper counts as matching (fitted "
        "on eval/questions/tune.jsonl by eval/tune_judge.py)")
    related_threshold: float = Field(
        0.05, ge=0, le=1, description="probability from which a paper that does not match is shown as "
        "possibly related (beneath the matches, not counted, not cited)")
    related_max: int = Field(5, ge=0, le=50, description="at most this many possibly related papers")
    narrow_min_coverage: float = Field(
        0.2, ge=0, le=1, description="a follow-up that narrows the previous list keeps papers naming at "
        "least this share of its key concepts...")
    narrow_relative: float = Field(
        0.6, ge=0, le=1, description="...and at least this share of the best paper's")
    abstain_threshold: float = Field(
        0.38, ge=0, le=1, description="best probability below which no paper answers a list question "
        "(abstain), unless a top paper names all its key concepts together")
    abstain_threshold_single: float = Field(
        0.6, ge=0, le=1, description="the same for a single-fact question: one paper must state the fact, "
        "so the bar is higher")
    depth: int = Field(
        60, ge=5, le=1000, description="papers judged per question (list answers may cite all that match)")


class LLMSettings(Section):
    backend: Answerer = Field("local", description="who writes the answer; extractive needs no LLM")
    model_path: Path | None = Field(
        None, description="GGUF file for the local back-end; unset = the shipped Qwen2.5-Coder-1.5B")
    model: str | None = Field(None, description="model name for openai/ollama back-ends")
    base_url: str | None = Field(
        None, description="endpoint for openai (e.g. http://127.0.0.1:8000/v1) or ollama")
    api_key: SecretStr | None = Field(
        None, description="API key for openai; environment only (PAPERCHAT_LLM__API_KEY)")
    temperature: float = Field(0.1, ge=0, le=2, description="sampling temperature")
    max_tokens: int = Field(512, ge=16, description="longest answer in tokens")
    context_tokens: int = Field(2048, ge=512, description="the model's context window used for the prompt")
    max_papers: int = Field(
        3, ge=1, le=30, description="abstracts given to the LLM for a fact question (fewer = an earlier "
        "first token on a CPU; list questions get every match's key sentences)")
    timeout_s: float = Field(
        120.0, gt=0, description="seconds the LLM server may stay silent (connecting, or between pieces of "
        "the answer) before the extractive answer is shown instead")
    max_retries: int = Field(
        2, ge=0, le=10, description="retries of the openai back-end after HTTP 429/5xx or a dropped "
        "connection (local and ollama are not retried)")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for the local model; unset = every core this process may use "
        "(on 2 cores, 2 threads gave the first word 27 % sooner than 1 idle and 26 % sooner under load)")


class UISettings(Section):
    host: str = Field("127.0.0.1", description="address to listen on; 0.0.0.0 only when you mean it")
    port: int = Field(7860, ge=1, le=65535, description="port of the chat page")
    username: str = Field("paperchat", description="user name when a password is set")
    password: SecretStr | None = Field(
        None, description="protect the page with this password; environment only")
    feedback_file: Path | None = Field(
        None, description="JSONL file where the chat saves thumbs-down and \"you missed\" notes as "
        "unconfirmed eval questions; unset = feedback.jsonl in the user data directory")


class Settings(BaseSettings):
    """Everything paperchat can be told; see paperchat.example.toml for every default."""

    model_config = SettingsConfigDict(env_prefix="PAPERCHAT_", env_nested_delimiter="__", extra="forbid",
                                      validate_assignment=True)

    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chunking: ChunkSettings = Field(default_factory=ChunkSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    ui: UISettings = Field(default_factory=UISettings)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, env_settings, _TomlSource(settings_cls)

    @classmethod
    def load(cls, config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
        """Settings from defaults, the TOML file, the environment, then `overrides` (nested dict).

        `config_file` None means `./paperchat.toml` when it exists. Errors become `SettingsError`
        with the offending key named.
        """
        _TomlSource.path = config_file
        _reject_unknown_env()
        try:
            return cls(**_drop_none(overrides or {}))
        except ValidationError as error:
            raise SettingsError(_describe(error)) from None
        finally:
            _TomlSource.path = None

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict safe to print or log (secrets shown as '**********')."""
        return self.model_dump(mode="json")


class _TomlSource(TomlConfigSettingsSource):
    """pydantic-settings' own TOML source, for `paperchat.toml` or `--config FILE`.

    Added here: an explicit file must exist, a TOML error is a `SettingsError`, and a secret
    written in the file is refused (unknown keys are refused by the models' `extra="forbid"`).
    """

    path: Path | None = None  # the explicit file of the `Settings.load` in progress
    SECRET_KEYS = (("llm", "api_key"), ("ui", "password"))

    def __init__(self, settings_cls):
        path = type(self).path or DEFAULT_CONFIG_FILE
        if type(self).path is not None and not path.exists():
            raise SettingsError(f"config file {path} does not exist")
        try:
            super().__init__(settings_cls, toml_file=path)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise SettingsError(f"{path}: not valid TOML ({error})") from None
        for section, key in self.SECRET_KEYS:
            table = self.toml_data.get(section)
            if isinstance(table, dict) and key in table:
                raise SettingsError(f"{path}: [{section}] {key} must not be written in a file; set "
                                    f"PAPERCHAT_{section.upper()}__{key.upper()} in the environment instead")


def _reject_unknown_env() -> None:
    """A misspelt `PAPERCHAT_*` variable is an error, not silently ignored."""
    sections = set(Settings.model_fields)
    for name in os.environ:
        if name.startswith("PAPERCHAT_"):
            section, _, key = name[len("PAPERCHAT_"):].lower().partition("__")
            model = Settings.model_fields.get(section)
            if section not in sections or (key and key not in model.annotation.model_fields):
                raise SettingsError(f"unknown setting in the environment: {name}")


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    """Overrides from CLI flags: a flag left unset (None) does not override anything."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = "unknown setting" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{where}: {message}")
    return "invalid settings: " + "; ".join(lines)


def example_toml() -> str:
    """A commented TOML file listing every setting with its default (`paperchat.example.toml`).

    Generated from the model, so it cannot drift from the code; a test checks the shipped file.
    """
    lines = ["# paperchat settings: copy to paperchat.toml and uncomment what you change.",
             ("# Environment variables override this file: PAPERCHAT_<SECTION>__<KEY>, "
              "e.g. PAPERCHAT_RETRIEVAL__TOP_K=20."),
             "# Secrets (llm.api_key, ui.password) are read from the environment only.", ""]
    for section, field in Settings.model_fields.items():
        lines.append(f"[{section}]")
        model = field.annotation
        for name, sub in model.model_fields.items():
            # Every `# name = value` line is valid TOML once uncommented; notes go on the line above.
            lines.append(f"# {sub.description}")
            if (section, name) in _TomlSource.SECRET_KEYS:
                variable = f"PAPERCHAT_{section.upper()}__{name.upper()}"
                lines.append(f"#   (environment only: {variable}; not in this file)")
            elif sub.default_factory is not None:  # only store.index_dir: machine-specific
                lines.append("#   (default: e.g. ~/.local/share/paperchat/index on Linux)")
                lines.append(f'# {name} = "~/paperchat-index"')
            elif sub.default is None:
                lines.append("#   (unset by default; for example:)")
                lines.append(f"# {name} = {_toml_value(_unset_example(section, name, sub.annotation))}")
            else:
                lines.append(f"# {name} = {_toml_value(sub.default)}")
        lines.append("")
    return "\n".join(lines)


def _unset_example(section: str, name: str, annotation: Any) -> Any:
    """A value to show for a setting that is unset by default: a known example, else one of its type."""
    if (section, name) in _UNSET_EXAMPLES:
        return _UNSET_EXAMPLES[section, name]
    kinds = typing.get_args(annotation) or (annotation,)
    if Path in kinds:
        return f"~/paperchat-{name}"
    return next((example for kind, example in ((int, 1), (float, 1.0), (bool, False)) if kind in kinds), "")


# What the example file shows for settings that are unset by default.
_UNSET_EXAMPLES: dict[tuple[str, str], Any] = {
    ("store", "chroma_host"): "localhost", ("retrieval", "year_min"): 2020, ("retrieval", "year_max"): 2024,
    ("retrieval", "reranker_path"): "~/models/cross-encoder", ("llm", "model_path"): "~/models/model.gguf",
    ("llm", "model"): "qwen2.5:1.5b", ("llm", "base_url"): "http://127.0.0.1:8000/v1", ("llm", "threads"): 2,
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
