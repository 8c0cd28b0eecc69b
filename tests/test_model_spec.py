"""Model specs: parsing, precedence (--model, $SOPAGENT_MODEL, sopagent.toml), secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from sopagent.errors import ModelSpecError, ModelUnavailableError
from sopagent.models import build_model, load_model, parse_spec, spec_of
from sopagent.settings import Settings


@pytest.mark.parametrize("text, backend, target, model", [
    ("", "llamacpp", "embedded", None),
    ("models/q.gguf", "llamacpp", "models/q.gguf", None),
    ("llamacpp:models/q.gguf", "llamacpp", "models/q.gguf", None),
    ("llamacpp:default", "llamacpp", "embedded", None),
    ("openai:gpt-4.1-mini", "openai", "gpt-4.1-mini", None),
    ("openai-compatible:http://127.0.0.1:8000/v1/#local", "openai-compatible", "http://127.0.0.1:8000/v1", "local"),
    ("vllm:https://gpu.example:8000/v1#Qwen/Qwen2.5-7B-Instruct", "vllm", "https://gpu.example:8000/v1",
     "Qwen/Qwen2.5-7B-Instruct"),
    ("transformers:gemma3-270m", "transformers", "gemma3-270m", None),
])
def test_specs_parse(text: str, backend: str, target: str, model: str | None) -> None:
    spec = parse_spec(text)
    assert (spec.backend, spec.target, spec.model) == (backend, target, model)


def test_options_are_typed_and_left_out_of_the_recorded_name() -> None:
    spec = parse_spec("vllm:http://h:8000/v1?key_env=TEAM_KEY&timeout=7.5&retries=4&format=guided#m")
    assert spec.options == {"key_env": "TEAM_KEY", "timeout": 7.5, "retries": 4, "format": "guided"}
    assert spec.key_env == "TEAM_KEY"
    assert spec.display == "vllm:http://h:8000/v1#m"


def test_threads_option_is_an_int_and_not_recorded() -> None:
    spec = parse_spec("llamacpp:embedded?threads=1")
    assert spec.option("threads") == 1 and spec.display == "llamacpp:embedded"


@pytest.mark.parametrize("text, needle", [
    ("openai:gpt-4.1-mini?api_key=sk-live-123", "secret"),
    ("vllm:http://user:hunter2@h:8000/v1#m", "credentials"),
    ("vllm:http://h:8000/v1", "#MODEL-NAME"),
    ("vllm:ftp://h/v1#m", "server URL"),
    ("mystery:thing", "unknown model backend"),
    ("openai:gpt?timeout=soon", "not a float"),
    ("openai:gpt?format=xml", "format"),
    ("openai:gpt?colour=blue", "unknown option"),
    ("llamacpp:embedded?threads=0", "at least 1"),
    ("openai:", "names no model"),
])
def test_bad_specs_say_how_to_fix_them_without_echoing_secrets(text: str, needle: str) -> None:
    with pytest.raises(ModelSpecError) as caught:
        parse_spec(text)
    message = str(caught.value)
    assert needle in message and "fix:" in message
    assert "sk-live-123" not in message and "hunter2" not in message


def test_precedence_flag_then_env_then_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "sopagent.toml"
    config.write_text('db = "team.db"\n[model]\nspec = "openai:gpt-4.1-mini"\ntimeout = 12\nkey_env = "TEAM_KEY"\n'
                      '[agent]\nconfidence_threshold = 0.6\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SOPAGENT_MODEL", raising=False)
    monkeypatch.delenv("SOPAGENT_DB", raising=False)
    settings = Settings.load()  # ./sopagent.toml
    assert spec_of(settings).target == "gpt-4.1-mini" and settings.database_url() == "sqlite:///team.db"
    assert settings.config_path == str(config)
    monkeypatch.setenv("SOPAGENT_MODEL", "vllm:http://h/v1#m")
    monkeypatch.setenv("SOPAGENT_AGENT__CONFIDENCE_THRESHOLD", "0.8")
    from_env = Settings.load()
    assert spec_of(from_env).backend == "vllm" and from_env.agent.confidence_threshold == 0.8
    assert spec_of(from_env).options == {"timeout": 12.0, "key_env": "TEAM_KEY"}  # config options still apply
    flags = Settings.load(model="openai:gpt-4.1?timeout=3", db="other.db", agent={"confidence_threshold": 0.5})
    spec = spec_of(flags)
    assert spec.target == "gpt-4.1" and spec.options["timeout"] == 3.0 and spec.options["key_env"] == "TEAM_KEY"
    assert flags.database_url() == "sqlite:///other.db" and flags.agent.confidence_threshold == 0.5


def test_no_spec_anywhere_means_the_embedded_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SOPAGENT_MODEL", raising=False)
    settings = Settings.load()
    assert spec_of(settings).display == "llamacpp:embedded" and settings.config_path is None


def test_explicit_config_file_and_its_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOPAGENT_MODEL", raising=False)
    good = tmp_path / "prod.toml"
    good.write_text('[model]\nspec = "transformers:gemma3-270m"\n[agent]\napprove_when_confidence_unknown = true\n'
                    "confidence_threshold = 0.6\n")
    settings = Settings.load(good)
    assert spec_of(settings).backend == "transformers"
    assert settings.agent.model_dump() == {"approve_when_confidence_unknown": True, "confidence_threshold": 0.6}
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nspec = 1\n")
    with pytest.raises(ModelSpecError, match="not valid TOML"):
        Settings.load(broken)
    typo = tmp_path / "typo.toml"
    typo.write_text('[model]\nspecs = "openai:gpt"\n')
    with pytest.raises(ModelSpecError, match=r"typo.toml: unknown key\(s\) in \[model\]: specs") as caught:
        Settings.load(typo)
    assert "use spec, key_env" in str(caught.value)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[agent]\nconfidence_threshold = 2\n")
    with pytest.raises(ModelSpecError, match=r"confidence_threshold in \[agent\]") as caught:
        Settings.load(wrong)
    assert "fix:" in str(caught.value)
    with pytest.raises(ModelSpecError, match="not found"):
        Settings.load(tmp_path / "missing.toml")
    monkeypatch.setenv("SOPAGENT_AGENT__CONFIDENCE_THRESHOLD", "high")
    with pytest.raises(ModelSpecError, match=r"^\$SOPAGENT_AGENT__CONFIDENCE_THRESHOLD: .*'high'"):
        Settings.load(good)  # the bad value is named where it came from, not in the file
    with pytest.raises(ModelSpecError, match=r"^--confidence: .*less than or equal to 1"):
        Settings.load(good, agent={"confidence_threshold": 7.0})


def test_every_command_reads_the_config_file_it_is_given(tmp_path: Path) -> None:
    from sopagent.cli import build_parser

    config = tmp_path / "team.toml"
    config.write_text('db = "team.db"\n[model]\nspec = "echo"\n')
    parser = build_parser()
    for argv in (["chat", "p.py"], ["test", "t.yaml"], ["serve", "p.py"], ["supervise"], ["audit", "verify"],
                 ["audit", "replay", "--policy", "p.py"], ["keys", "list"], ["effects", "run", "p.py"], ["probe", "p.py"]):
        settings = Settings.from_args(parser.parse_args([*argv, "--config", str(config)]))
        assert settings.database_url() == "sqlite:///team.db", argv
        assert settings.model == "echo", argv


def test_openai_without_a_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEAM_KEY", raising=False)
    with pytest.raises(ModelUnavailableError, match=r"\$TEAM_KEY"):
        build_model(parse_spec("openai:gpt-4.1-mini?key_env=TEAM_KEY"))


def test_a_missing_gguf_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="not found"):
        load_model(str(tmp_path / "nope.gguf"), self_test=False)


def test_cli_reports_a_bad_spec_or_config_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sopagent.cli import main

    root = Path(__file__).resolve().parent.parent
    db = f"sqlite:///{tmp_path / 'a.db'}"
    status = main(["chat", str(root / "policies" / "card_services.py"), "--db", db,
                   "--model", "openai:gpt-4.1-mini?api_key=sk-live-999"])
    err = capsys.readouterr().err
    assert status == 3 and "secret" in err and "fix:" in err and "sk-live-999" not in err
    assert "Traceback" not in err
    config = tmp_path / "sopagent.toml"
    config.write_text("[agent]\napprove_when_confidence_unknown = 'maybe'\n")
    status = main(["chat", str(root / "policies" / "card_services.py"), "--db", db, "--config", str(config)])
    err = capsys.readouterr().err
    assert status == 3 and "approve_when_confidence_unknown" in err and "fix:" in err


@pytest.mark.parametrize("text, backend, target", [("echo", "echo", "0"), ("echo:0.05", "echo", "0.05"),
                                                    ("scripted:answers.json", "scripted", "answers.json"),
                                                    ("uniform", "uniform", "")])
def test_the_test_models_are_specs_like_the_others(text: str, backend: str, target: str) -> None:
    spec = parse_spec(text)
    assert (spec.backend, spec.target) == (backend, target)


def test_the_uniform_model_takes_no_target_and_reads_nothing() -> None:
    from sopagent.models.base import ChatPrompt
    from sopagent.policy import OneOf

    with pytest.raises(ModelSpecError, match="takes no target"):
        parse_spec("uniform:fast")

    class Kind(OneOf):
        options = {"a": "one", "b": "two", "c": "three", "d": "four"}

    model = load_model("uniform")
    prompt = ChatPrompt("system", "Customer: hello", "Which?")
    choice = model.choose(prompt, 4)
    assert choice.index == 0 and choice.probabilities == [0.25] * 4
    assert model.extract(prompt, Kind).facts == Kind()


def test_an_echo_delay_that_is_not_one_says_how_to_write_it() -> None:
    with pytest.raises(ModelSpecError, match=r"echo:soon is not a delay\n  fix: write echo or echo:SECONDS"):
        parse_spec("echo:soon")


def test_the_echo_model_comes_from_the_environment_or_the_config_file_too(tmp_path, monkeypatch) -> None:
    from sopagent.models import load_model
    from sopagent.models.echo import EchoModel

    monkeypatch.delenv("SOPAGENT_MODEL", raising=False)
    config = tmp_path / "sopagent.toml"
    config.write_text('[model]\nspec = "echo:0.01"\n')
    model = load_model(config=config)
    assert isinstance(model, EchoModel) and model.delay_s == 0.01
    monkeypatch.setenv("SOPAGENT_MODEL", "echo")
    assert isinstance(load_model(), EchoModel)


def test_an_explicit_database_url_does_not_read_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sopagent.store import database_url

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sopagent.toml").write_text("[model\n")  # broken: read only when no URL is given
    assert database_url("audit.db") == "sqlite:///audit.db"
    assert database_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    with pytest.raises(ModelSpecError, match="not valid TOML"):
        database_url()


def test_the_cache_of_the_config_file_given_is_where_bundled_models_are_joined(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import sopagent.models.embedded as embedded

    asked: list[Path | None] = []

    def joined_under(progress: object = None, cache: Path | None = None) -> Path:
        asked.append(cache)
        raise ModelUnavailableError("not joined here", fix="-")

    monkeypatch.setattr(embedded, "embedded_model_path", joined_under)
    monkeypatch.delenv("SOPAGENT_MODEL", raising=False)
    monkeypatch.delenv("SOPAGENT_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./sopagent.toml: only --config names the cache
    config = tmp_path / "team.toml"
    config.write_text(f'cache = "{tmp_path / "shared-cache"}"\n')
    with pytest.raises(ModelUnavailableError, match="not joined here"):
        load_model(config=config)
    assert asked == [tmp_path / "shared-cache"]
    assert embedded.cache_dir(tmp_path / "shared-cache") == tmp_path / "shared-cache" / "models"
