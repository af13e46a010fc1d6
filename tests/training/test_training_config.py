"""Stage configs: presets load and validate, dotted overrides, helpful errors."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from medeir_rag.training.config import (
    CONFIG_DIR,
    PRESET_NAMES,
    STAGES,
    FinetuneConfig,
    PretrainConfig,
    dump_config,
    load_config,
    parse_override,
    set_dotted,
)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_loads(stage, preset):
    assert (CONFIG_DIR / f"{stage}_{preset}.yaml").is_file()
    config = load_config(stage, preset)
    assert config.model_dump()


def test_overrides_are_typed_and_nested():
    config = load_config("pretrain", "tiny", ["optim.lr=1e-3", "train.max_steps=7", "data.curriculum.0.seq_len=48",
                                              "model.num_hidden_layers=3"])
    assert config.optim.lr == pytest.approx(1e-3)
    assert config.train.max_steps == 7
    assert config.data.curriculum[0].seq_len == 48
    assert config.model.overrides() == {"num_hidden_layers": 3}
    whole = load_config("pretrain", "tiny", ["data.curriculum=[{seq_len: 16, fraction: 1.0}]"])
    assert [p.seq_len for p in whole.data.curriculum] == [16]


def test_parse_override():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("x=true") == ("x", True)
    assert parse_override("x=2e-5") == ("x", pytest.approx(2e-5))
    with pytest.raises(ValueError, match="key.path=value"):
        parse_override("novalue")
    tree: dict = {}
    set_dotted(tree, "a.b.c", 1)
    assert tree == {"a": {"b": {"c": 1}}}


def test_unknown_keys_and_bad_values_fail():
    with pytest.raises(ValidationError, match="extra"):
        load_config("pretrain", "tiny", ["optim.lrr=1"])
    with pytest.raises(ValidationError, match="sum to 1"):
        load_config("pretrain", "tiny", ["data.curriculum.0.fraction=0.2"])
    with pytest.raises(ValidationError, match="longest phase"):
        load_config("pretrain", "tiny", ["train.batch_tokens=16"])
    with pytest.raises(ValidationError, match="positive weight"):
        FinetuneConfig.model_validate({"data": {"weights": {k: 0 for k in
                                       ("medquad", "title_abstract", "go_definition", "wordnet", "gcide", "spans")}}})
    with pytest.raises(ValueError, match="unknown pretrain preset"):
        load_config("pretrain", "huge")


def test_resolved_config_round_trips(tmp_path):
    config = load_config("pretrain", "tiny", ["optim.lr=0.01", "out_dir=somewhere"])
    path = dump_config(config, tmp_path / "config.yaml")
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == 0.01
    assert load_config("pretrain", path) == config
    assert isinstance(config, PretrainConfig)
