"""Specification of params.yaml validation: the public contract users edit with `dvc exp run -S`."""

from __future__ import annotations

import copy

import pytest
from params_file import DEFAULTS, edited

from seqsweep.errors import ParamsError
from seqsweep.params import HAR_SHA256, HAR_URL, IMDB_SHA256, IMDB_URL, load_params, validate


def test_defaults_are_the_official_urls_checksums_and_the_studys_grid():
    params = validate(DEFAULTS)
    assert params["data"]["har"] == {"url": HAR_URL, "sha256": HAR_SHA256}
    assert params["data"]["imdb"] == {"url": IMDB_URL, "sha256": IMDB_SHA256, "num_words": 5000, "maxlen": 500}
    assert params["model"] == {"units": [10, 100, 200], "dropout": [0.25, 0.5]}
    assert params["train"]["batch_size"] == [16, 32, 64]
    assert params["train"]["repeats"] == 10 and params["train"]["epochs"] is None


def test_a_single_value_is_accepted_wherever_a_grid_axis_takes_a_list():
    params = validate(edited({"model.units": 200}))
    assert params["model"]["units"] == [200]


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("data.har.url", "ftp://example.org/x.zip", "URL"),
        ("data.har.sha256", "abc", "SHA-256"),
        ("data.imdb.num_words", "5000", "integer"),
        ("data.imdb.num_words", True, "integer"),
        ("data.imdb.maxlen", 0, "integer"),
        ("model.units", [10, -1], "integer >= 1"),
        ("model.dropout", 1.0, "[0.0, 1.0)"),
        ("train.batch_size", 0, "integer >= 1"),
        ("train.repeats", 0, "integer >= 1"),
        ("train.epochs", 2.5, "null or an integer"),
        ("archs.har", ["lstm", "two words"], "architecture names"),
        ("archs.imdb", [3], "architecture names"),
        ("train.validation", 0.6, "[0.0, 0.5]"),
    ],
)
def test_a_wrong_type_or_out_of_range_value_names_the_key_the_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ParamsError) as exc:
        validate(edited({key: value}))
    message = str(exc.value)
    assert key in message and repr(value) in message and allowed in message


def test_a_study_of_one_dataset_lists_no_architecture_for_the_other_but_not_none_at_all():
    assert validate(edited({"archs.imdb": []}))["archs"] == {"har": DEFAULTS["archs"]["har"], "imdb": []}
    with pytest.raises(ParamsError, match="archs lists no architecture for any dataset"):
        validate(edited({"archs.imdb": [], "archs.har": []}))


def test_an_unknown_key_is_refused_with_the_keys_that_are_allowed():
    params = edited({"train.learning_rate": 0.01})
    with pytest.raises(ParamsError, match=r"unknown key 'train.learning_rate'.*'batch_size'"):
        validate(params)


def test_a_missing_key_is_named():
    params = copy.deepcopy(DEFAULTS)
    del params["data"]["imdb"]["maxlen"]
    with pytest.raises(ParamsError, match="missing key 'data.imdb.maxlen'"):
        validate(params)


def test_a_missing_or_malformed_params_file_is_named(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="params.yaml: not valid YAML"):
        load_params(tmp_path / "params.yaml")
