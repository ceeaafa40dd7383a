"""DataConfig: the data section of a recipe validates itself with one clear line per mistake."""

import pytest

from mumo.data.config import LABELLED_KINDS, DataConfig
from mumo.errors import ConfigError


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"kind": "pairs"}, "data.kind='pairs' needs data.path=FILE"),
        ({"kind": "text"}, "data.kind='text' needs data.path=FILE"),
        ({"kind": "shards"}, "data.kind='shards' needs data.path=FOLDER"),
        ({"kind": "imagefolder"}, "data.kind='imagefolder' needs data.path=FOLDER"),
        ({"kind": "video"}, "DataConfig.kind: 'video' is not one of 'shapes', 'pairs'"),
        ({"train_size": 0}, "data sizes must be >= 0"),
        ({"min_objects": 3, "max_objects": 2}, "need 1 <= data.min_objects <= max_objects <= 3"),
        ({"shuffle_block": 0}, "data.shuffle_block must be >= 1"),
        ({"num_workers": -1}, "data.num_workers must be >= 0"),
    ],
)
def test_bad_data_configs_say_what_to_fix(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        DataConfig(**overrides)
    assert "\n" not in str(e.value)


def test_data_config_round_trips_and_stays_importable_from_train():
    from mumo.train import DataConfig as from_train
    from mumo.train.config import LABELLED_KINDS as labelled_from_train
    from mumo.train.config import TrainConfig

    config = DataConfig(kind="shards", path="/data/shards", image_size=32, shuffle_block=7)
    assert DataConfig.from_dict(config.to_dict()) == config
    assert from_train is DataConfig and labelled_from_train is LABELLED_KINDS == ("digits", "imagefolder")
    assert TrainConfig(data={"kind": "text", "path": "corpus.txt"}).data == DataConfig(
        kind="text", path="corpus.txt"
    )
    assert DataConfig(kind="digits").path is None  # digits come with scikit-learn: no path
