"""The template configuration: defaults, invoke.yaml values and overrides, and a clear error for bad input."""

from pathlib import Path

import pytest

from image.config import PROJECT, load_config
from vrpipe.errors import SettingsError


def test_defaults_build_trixie_into_build_template():
    config = load_config({}, source_date_epoch=1700000000)
    assert config.suite == "trixie" and config.output_dir == PROJECT / "build" / "template"
    assert config.source_date_epoch == 1700000000


def test_values_are_typed_and_relative_paths_are_under_the_checkout():
    config = load_config({"suite": "bookworm", "disk_size_mib": "4096", "output_dir": "out"}, source_date_epoch=1)
    assert config.suite == "bookworm" and config.disk_size_mib == 4096
    assert config.output_dir == PROJECT / "out" and isinstance(config.output_dir, Path)


def test_an_override_wins_and_none_means_not_given():
    config = load_config({"suite": "bookworm"}, suite=None, output_dir="/tmp/x", source_date_epoch=1)
    assert config.suite == "bookworm" and config.output_dir == Path("/tmp/x")


def test_source_date_epoch_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    assert load_config({}).source_date_epoch == 1234567890


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"suite": "sid"}, "template.suite: 'sid' is not one of bookworm, trixie"),
        ({"mirror": "ftp://example.org/debian"}, "template.mirror"),
        ({"colour": "blue"}, "unknown setting(s) colour"),
        ({"disk_size_mib": "big"}, "template.disk_size_mib: 'big'"),
        ({"esp_size_mib": 1024}, "template.esp_size_mib"),
        ({"cache_dir": "/tmp/a b"}, "template.cache_dir: /tmp/a b must not contain blanks"),
        ({"output_dir": "/tmp/a b"}, "template.output_dir: /tmp/a b must not contain blanks"),
    ],
)
def test_bad_settings_are_named(values, message):
    with pytest.raises(SettingsError) as error:
        load_config(values, source_date_epoch=1)
    assert message in str(error.value)


def test_a_zero_epoch_is_refused():
    with pytest.raises(SettingsError, match="SOURCE_DATE_EPOCH"):
        load_config({}, source_date_epoch=0)
