"""The model zoo: cards, name resolution (local folder, $EMORL_MODELS, HF cache), tiny builders, errors."""

from pathlib import Path

import pytest
import torch

from emorl import zoo
from emorl.tiny_models import build_tiny, tiny_main
from emorl.upstreams import load_upstream, upstream_dims, upstream_identity
from emorl.upstreams.hf import HFUpstream, UpstreamLoadError

NAMES = ["data2vec-audio-large", "hubert-large", "wavlm-large", "whisper-large-v3"]


@pytest.fixture(autouse=True)
def _no_real_models(tmp_path, monkeypatch):
    """Nothing real can be found: empty HF cache, no $EMORL_MODELS."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("EMORL_MODELS", raising=False)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_zoo")
    return {name: build_tiny(name, root / name) for name in NAMES}


def test_every_card_loads_with_its_fields():
    assert {c.kind for c in zoo.list_cards()} <= set(zoo.KINDS)
    cards = [c for c in zoo.list_cards(kind="upstream") if c.backend == "hf"]
    assert [c.name for c in cards] == NAMES
    for card in cards:
        for field in zoo.REQUIRED_FIELDS:
            assert getattr(card, field) not in (None, ""), (card.name, field)
        assert card.backend == "hf"
        assert card.frame_rate == 50 and card.sample_rate == 16000
        assert card.feature_dim in (1024, 1280) and card.num_layers in (24, 32)
        assert card.tiny and card.feature_extractor
        assert "in_corpus" in card.reference
        assert zoo.load_card(card.name) == card == zoo.load_card(card.hub_id)


def test_reference_numbers_are_emobox_s():
    wavlm = zoo.load_card("wavlm-large").reference["in_corpus"]
    assert wavlm["iemocap"] == {"ua": 69.47, "wa": 69.07, "f1": 69.29}
    assert wavlm["meld"] == {"ua": 28.18, "wa": 49.31, "f1": 29.11}
    assert zoo.load_card("whisper-large-v3").reference["in_corpus"]["iemocap"]["ua"] == 73.54
    # EmoBox reports data2vec 2.0, a different model: no number on the data2vec-audio card
    assert zoo.load_card("data2vec-audio-large").reference["in_corpus"] == {}


@pytest.mark.parametrize("name", NAMES)
def test_tiny_model_loads_through_the_normal_path(name, tiny_models):
    card = zoo.load_card(name)
    path = zoo.resolve(tiny_models[name])
    assert path == tiny_models[name]
    assert (path / "config.json").is_file() and (path / "preprocessor_config.json").is_file()
    upstream = load_upstream(path)
    assert isinstance(upstream, HFUpstream)
    assert type(upstream.model).__name__ == card.architecture
    assert upstream.num_layers == 2 and upstream.hidden_dim == 32
    assert upstream_dims(path) == (2, 32)
    assert upstream.frame_rate == card.frame_rate
    assert upstream.identity == upstream_identity(path)
    # architecture switches of the real checkpoint are kept
    for key, value in card.architecture_config.items():
        got = getattr(upstream.model.config, key)
        assert (list(got) if isinstance(got, (list, tuple)) else got) == value, key
    assert not any(p.requires_grad for p in upstream.parameters())
    upstream.train()
    assert not upstream.model.training


def test_build_tiny_is_deterministic(tmp_path):
    a = build_tiny("hubert-large", tmp_path / "a", seed=3)
    b = build_tiny("hubert-large", tmp_path / "b", seed=3)
    sa = HFUpstream(a).model.state_dict()
    sb = HFUpstream(b).model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_zoo_name_resolves_from_emorl_models(tmp_path, monkeypatch, tiny_models):
    import shutil

    base = tmp_path / "models"
    shutil.copytree(tiny_models["wavlm-large"], base / "wavlm-large")
    monkeypatch.setenv("EMORL_MODELS", str(base))
    assert zoo.resolve("wavlm-large") == base / "wavlm-large"
    assert zoo.resolve("microsoft/wavlm-large") == base / "wavlm-large"
    assert load_upstream("wavlm-large").name == "wavlm-large"


def test_a_zoo_name_resolves_from_the_hf_cache(tmp_path, tiny_models):
    import shutil

    # the layout `hf download` leaves: models--owner--name/{refs/main, snapshots/<commit>/...}
    repo = tmp_path / "hf_home" / "hub" / "models--facebook--hubert-large-ll60k"
    commit = "0" * 40
    shutil.copytree(tiny_models["hubert-large"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert zoo.resolve("hubert-large") == repo / "snapshots" / commit
    assert zoo.locate(zoo.load_card("hubert-large")) == repo / "snapshots" / commit


def test_an_unavailable_model_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EMORL_MODELS", str(tmp_path / "models"))
    with pytest.raises(zoo.ModelNotAvailableError) as err:
        zoo.resolve("wavlm-large")
    message = str(err.value)
    assert "'wavlm-large' (microsoft/wavlm-large) is not available" in message
    assert "hf download microsoft/wavlm-large" in message
    assert str(tmp_path / "models" / "wavlm-large") in message
    assert "emorl zoo tiny wavlm-large" in message
    # the same error reaches whoever loads by name
    with pytest.raises(zoo.ModelNotAvailableError):
        load_upstream("whisper-large-v3")


def test_unknown_names_and_missing_folders(tmp_path):
    with pytest.raises(zoo.ModelNotFoundError, match="not a model of the zoo"):
        zoo.resolve("wavlm-gigantic")
    with pytest.raises(zoo.ModelNotFoundError, match="does not exist"):
        zoo.resolve(str(tmp_path / "nowhere"))
    with pytest.raises(UpstreamLoadError, match="config.json is missing"):
        load_upstream(tmp_path)


def test_a_checkpoint_of_the_wrong_architecture_is_refused(tmp_path, tiny_models):
    import json
    import shutil

    fake = tmp_path / "fake"
    shutil.copytree(tiny_models["wavlm-large"], fake)
    config = json.loads((fake / "config.json").read_text())
    config["model_type"] = "gpt2"
    (fake / "config.json").write_text(json.dumps(config))
    with pytest.raises(UpstreamLoadError, match="not supported"):
        load_upstream(fake)


def test_list_and_tiny_commands(tmp_path, capsys):
    assert zoo.list_main() == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert "69.47/69.07/69.29" in out and "not found" in out
    assert tiny_main("wavlm-large", tmp_path / "w") == 0
    assert "upstream:" in capsys.readouterr().out
    assert (tmp_path / "w" / "config.json").is_file()
