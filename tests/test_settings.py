"""The settings tree: precedence, rejection of unknown keys, secrets kept out of files and output."""

from __future__ import annotations

import pytest
from conftest import REPO

from paperchat.rag.settings import Settings, SettingsError, example_toml


def test_precedence_is_arguments_then_env_then_file(tmp_path, monkeypatch):
    (tmp_path / "paperchat.toml").write_text("[retrieval]\ntop_k = 3\ncandidates = 40\n"
                                             "[llm]\nbackend = 'openai'\n")
    monkeypatch.setenv("PAPERCHAT_RETRIEVAL__TOP_K", "5")
    settings = Settings.load(overrides={"llm": {"backend": "extractive"}, "store": {"index_dir": None}})
    assert settings.retrieval.top_k == 5  # env beats file
    assert settings.retrieval.candidates == 40  # file beats default
    assert settings.llm.backend == "extractive"  # argument beats file; None overrides nothing


@pytest.mark.parametrize("toml, message", [
    ("[retrieval]\ntop_kk = 3\n", "retrieval.top_kk: unknown setting"),
    ("[nonsense]\nx = 1\n", "nonsense: unknown setting"),
    ("[retrieval]\ntop_k = 'many'\n", "retrieval.top_k"),
    ("[retrieval\n", "not valid TOML"),
])
def test_bad_config_file_is_refused_with_the_key_named(tmp_path, toml, message):
    (tmp_path / "paperchat.toml").write_text(toml)
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        Settings.load()


def test_unknown_environment_variable_is_refused(monkeypatch):
    monkeypatch.setenv("PAPERCHAT_RETRIVAL__TOP_K", "3")
    with pytest.raises(SettingsError, match="PAPERCHAT_RETRIVAL__TOP_K"):
        Settings.load()


def test_api_key_comes_from_env_only_and_is_never_printed(tmp_path, monkeypatch):
    (tmp_path / "paperchat.toml").write_text("[llm]\napi_key = 'sk-from-file-123456'\n")
    with pytest.raises(SettingsError, match="environment"):
        Settings.load()
    (tmp_path / "paperchat.toml").unlink()
    monkeypatch.setenv("PAPERCHAT_LLM__API_KEY", "sk-secret-abcdef123")
    settings = Settings.load()
    assert settings.llm.api_key.get_secret_value() == "sk-secret-abcdef123"
    assert "sk-secret" not in repr(settings) and "sk-secret" not in str(settings.redacted())


def test_explicit_config_file_must_exist(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        Settings.load(config_file=tmp_path / "missing.toml")


def test_shipped_example_config_lists_every_setting_and_loads():
    shipped = (REPO / "paperchat.example.toml").read_text()
    assert shipped == example_toml(), \
        "regenerate paperchat.example.toml from paperchat.rag.settings.example_toml()"
    for section, field in Settings.model_fields.items():
        for name in field.annotation.model_fields:
            assert f"# {name} =" in shipped or f"PAPERCHAT_{section.upper()}__{name.upper()}" in shipped, \
                f"{section}.{name} missing from the example"
    assert Settings.model_validate(_defaults_written_in(shipped))  # every default written there is valid


def _defaults_written_in(text: str) -> dict:
    """The `# key = value` lines of the example, parsed as TOML under their [section]."""
    import re
    import tomllib

    out: dict = {}
    section = None
    for line in text.splitlines():
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
        elif section is not None and re.match(r"# \w+ =", line):  # each must be valid TOML once uncommented
            section.update(tomllib.loads(line[2:]))
    return out
