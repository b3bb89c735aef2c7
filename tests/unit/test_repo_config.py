"""The repository settings: defaults, paths relative to the checkout, and clear errors for bad input."""

import pytest

from repo.config import RepoConfig, listen_address, load, valid_days
from repo.render import PROJECT
from vrpipe.errors import VrpipeError


def test_defaults_and_codenames():
    cfg = load(None)
    assert cfg.dir == PROJECT / "build" / "repo" and cfg.public == cfg.dir / "public"
    assert cfg.codenames == [
        "stable",
        "stable-previous",
        "stable-previous-2",
        "security",
        "security-previous",
        "security-previous-2",
    ]
    assert load({"keep": 2, "channels": ["stable"]}).codenames == ["stable", "stable-previous"]
    assert load({"keep": 4}).history("stable") == ["stable-previous", "stable-previous-2", "stable-previous-3"]
    assert cfg.channel(None) == "stable" and cfg.channel("security") == "security"


def test_paths_are_relative_to_the_checkout():
    cfg = load({"dir": "out/repo", "gnupghome": "/srv/keys", "key_file": ""})
    assert cfg.dir == PROJECT / "out" / "repo"
    assert str(cfg.gnupghome) == "/srv/keys"
    assert cfg.key_file is None


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"dirr": "x"}, "unknown setting"),
        ({"channels": []}, "at least one channel"),
        ({"channels": ["Stable"]}, "'Stable' is not a codename"),
        ({"channels": ["stable-previous"]}, "is not a codename"),
        ({"channels": ["stable-previous-2"]}, "is not a codename"),
        ({"keep": 1}, "repo.keep: 1 is not a number of versions from 2"),
        ({"keep": 11}, "to 10"),
        ({"keep": "3"}, "repo.keep: '3'"),
        ({"keep": True}, "repo.keep: True"),
        ({"valid_for": "7 days"}, "valid_for"),
        ({"valid_for": "0d"}, r"'0d' is 0 days; choose 1 to 90 days"),
        ({"valid_for": "0d 0m"}, "is 0 days"),
        ({"valid_for": "91d"}, "is 91 days"),
        ({"valid_for": "3m"}, "is 93 days"),
        ({"valid_for": "1y"}, "is 365 days"),
        ({"url": "ftp://host/"}, "repo.url"),
        ({"url": "http://host/debian"}, "ending in /"),
        ({"listen": "localhost"}, "is not HOST:PORT"),
        ({"key": 123}, "expected text"),
        ({"dir": ""}, "must name a directory"),
    ],
)
def test_bad_settings_are_named(settings, complaint):
    with pytest.raises(VrpipeError, match=complaint):
        load(settings)


@pytest.mark.parametrize(("valid_for", "days"), [("1d", 1), ("7d", 7), ("1m 2d", 33), ("2m", 62), ("90d", 90)])
def test_valid_for_within_limits(valid_for, days):
    assert valid_days(valid_for) == days
    assert load({"valid_for": valid_for}).valid_for == valid_for


def test_unknown_channel_is_refused():
    with pytest.raises(VrpipeError, match="'testing' is not one of stable, security"):
        RepoConfig().channel("testing")


def test_listen_address():
    assert listen_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert listen_address("[::1]:0") == ("::1", 0)
    with pytest.raises(VrpipeError):
        listen_address("127.0.0.1:70000")
