"""The archive-key record: written and read back whole, and a damaged one named instead of guessed at;
the keyring package's path is the template's."""

import pytest

from image.router import KEYRING
from repo import keys
from repo.packages import ROUTER_KEYRING
from vrpipe.errors import VrpipeError

A, B = "A" * 40, "B" * 40


def test_record_round_trip_and_newest(tmp_path):
    assert keys.load(tmp_path) is None
    record = keys.ArchiveKeys((A, B), 2, 1_700_000_000)
    keys.save(tmp_path, record)
    assert keys.load(tmp_path) == record
    assert record.newest == B
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{", "is damaged"),
        ('{"signing": ["' + A + '"]}', "is damaged"),
        ('{"signing": [], "generation": 1, "since": 0}', "names no signing key"),
    ],
)
def test_damaged_record_is_named(tmp_path, text, complaint):
    (tmp_path / keys.RECORD).write_text(text)
    with pytest.raises(VrpipeError, match=complaint):
        keys.load(tmp_path)


def test_router_keyring_path_is_the_templates():
    """vr-archive-keyring takes over the file image/router.py installs and the template's Signed-By names."""
    assert ROUTER_KEYRING == KEYRING
