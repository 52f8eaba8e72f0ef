"""models.toml: the default registry, user overrides, and validation messages."""

from __future__ import annotations

import pytest

from assistant.config import load_registry, parse_entry, parse_sampling
from assistant.core.sampling import SAMPLING_FIELDS


def test_default_registry_has_the_three_real_models():
    reg = load_registry()
    assert reg.errors == []
    assert reg.default == "smollm2"
    assert {"smollm2", "qwen2.5-coder", "gemma3-270m"} <= set(reg.models)
    assert reg.models["smollm2"].sha256.startswith("b179c952")


def test_user_file_overrides_and_extends(tmp_path):
    cfg = tmp_path / "models.toml"
    cfg.write_text('default = "mine"\n[models.mine]\npath = "/x/y.gguf"\nprompt_format = "alpaca"\n'
                   '[models.mine.sampling]\ntemperature = 0.3\n'
                   '[models.smollm2]\nfile = "other.gguf"\n')
    reg = load_registry(str(cfg))
    assert reg.default == "mine"
    assert reg.models["mine"].sampling.temperature == 0.3
    assert reg.models["smollm2"].file == "other.gguf"
    assert "gemma3-270m" in reg.models


def test_bad_entry_is_disabled_with_a_named_error(tmp_path):
    cfg = tmp_path / "models.toml"
    cfg.write_text('[models.broken]\npath = "/x.gguf"\n[models.broken.sampling]\ntemperature = "hot"\n'
                   '[models.fine]\npath = "/y.gguf"\n')
    reg = load_registry(str(cfg))
    assert "broken" not in reg.models and "fine" in reg.models
    assert any("models.broken.sampling.temperature must be a number between 0 and 100, got 'hot'" in e for e in reg.errors)
    assert any(str(cfg) in e for e in reg.errors)
    with pytest.raises(KeyError, match="broken"):
        reg.get("broken")


@pytest.mark.parametrize("raw, message", [
    ({"path": "/a.gguf", "memory": "huge"}, "memory must be one of"),
    ({"path": "/a.gguf", "context_length": 3}, "context_length must be an integer between"),
    ({"path": "/a.gguf", "stop": "x"}, "stop must be a list"),
    ({"path": "/a.gguf", "colour": "red"}, "colour is not a known setting"),
    ({"path": "/a.gguf", "sampling": {"top_p": 2}}, "top_p"),
    ({"description": "no file"}, "needs `path`"),
    ({"backend": "openai", "base_url": "ftp://x"}, "base_url must be an http"),
    ({"path": "/a.gguf", "sha256": "xyz"}, "sha256 must be 64 hexadecimal"),
    ({"path": "/a.gguf", "backend": "Bad Name!"}, "backend must be one of"),
])
def test_validation_messages(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_entry("m", raw, "models.toml")


def test_every_sampling_field_is_a_setting_with_its_range():
    """models.toml's sampling keys, their kinds and ranges are SAMPLING_FIELDS, nothing else."""
    for f in SAMPLING_FIELDS:
        good = parse_sampling({f.name: f.lo}, "models.toml")
        assert getattr(good, f.name) == f.lo and type(getattr(good, f.name)) is (int if f.kind == "int" else float)
        with pytest.raises(ValueError, match=f"sampling: {f.name} must be between"):
            parse_sampling({f.name: f.lo - 1}, "models.toml")
        if f.kind == "int":
            with pytest.raises(ValueError, match=f"sampling.{f.name} must be an integer"):
                parse_sampling({f.name: f.lo + 0.5}, "models.toml")
    with pytest.raises(ValueError) as err:
        parse_sampling({"warmth": 1}, "models.toml")
    assert str(err.value).endswith("allowed: " + ", ".join(f.name for f in SAMPLING_FIELDS))


def test_broken_toml_keeps_the_defaults(tmp_path):
    cfg = tmp_path / "models.toml"
    cfg.write_text("[models.x\n")
    reg = load_registry(str(cfg))
    assert "smollm2" in reg.models
    assert any("not valid TOML" in e for e in reg.errors)


def test_aliases_name_a_model_for_api_clients(tmp_path):
    cfg = tmp_path / "models.toml"
    cfg.write_text('[models.mine]\npath = "/x/y.gguf"\naliases = ["gpt-4o-mini", "gpt-3.5-turbo"]\n'
                   '[models.bad]\npath = "/x/z.gguf"\naliases = "gpt-4o"\n')
    reg = load_registry(str(cfg))
    assert reg.resolve("gpt-3.5-turbo") == "mine" and reg.resolve("mine") == "mine"
    assert reg.resolve("gpt-4o") is None
    assert any("models.bad.aliases must be a list" in e for e in reg.errors)


def test_a_zero_repeat_penalty_is_refused():
    """The penalty divides logits: zero would turn every repeated token's logit into inf."""
    from assistant.core.sampling import SamplingError, SamplingSettings

    with pytest.raises(SamplingError, match="repeat_penalty must be between 0.01 and 100"):
        SamplingSettings(repeat_penalty=0.0).validate()
    SamplingSettings(repeat_penalty=0.01).validate()
