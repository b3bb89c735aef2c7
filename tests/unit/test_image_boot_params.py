"""vr-boot's boot parameters: parsing with clear errors, the round trip through format_params, where they
are read from (file, fw_cfg, kernel command line) and the files written from them under a test root."""

import base64
import json

import pytest
from vr.boot import BadParams, BootParams, format_params, parse_params, read_params, write_files

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyMaterial manager@vrpipe"


def full():
    return BootParams(hostname="r1", control="169.254.3.4/16", public="203.0.113.10/24", gateway="203.0.113.1",
                      authorized_key=KEY)


def test_format_and_parse_round_trip_with_blanks_or_semicolons():
    text = format_params(full())
    assert " " not in base64.b64encode(KEY.encode()).decode() and KEY not in text
    assert parse_params(text) == full()
    assert parse_params(text.replace(" ", ";")) == full()


def test_the_kernel_command_line_counts_only_prefixed_words():
    cmdline = f"root=UUID=x rw console=ttyS0 {format_params(full(), prefix='vr.')} quiet"
    assert parse_params(cmdline, "vr.") == full()


def test_addresses_pair_with_their_interfaces():
    assert full().addresses() == [("eth0", "169.254.3.4/16"), ("eth1", "203.0.113.10/24")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("role=router", "hostname is missing"),
        ("hostname=r1 colour=blue", "unknown boot parameter(s) colour"),
        ("hostname=R_1", "hostname 'R_1' is not a host name"),
        ("hostname=r1 control=169.254.3.4", "needs a prefix length"),
        ("hostname=r1 control=169.254.3.400/16", "control '169.254.3.400/16'"),
        ("hostname=r1 gateway=nowhere", "gateway 'nowhere'"),
        ("hostname=r1 control_if=this-name-is-too-long", "control_if"),
        ("hostname=r1 authorized_key=***", "not base64"),
        (f"hostname=r1 authorized_key={base64.b64encode(b'not a key').decode()}", "not an SSH public key"),
        ("hostname=r1 stray", "'stray' is not key=value"),
    ],
)
def test_bad_parameters_are_named(text, message):
    with pytest.raises(BadParams) as error:
        parse_params(text)
    assert message in str(error.value)


def test_the_file_wins_over_fw_cfg_which_wins_over_the_kernel_command_line(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("quiet vr.hostname=from-cmdline\n")
    assert read_params(tmp_path) == (BootParams(hostname="from-cmdline"), "kernel command line")
    fw_cfg = tmp_path / "sys/firmware/qemu_fw_cfg/by_name/opt/vr/cmdline/raw"
    fw_cfg.parent.mkdir(parents=True)
    fw_cfg.write_text("hostname=from-fw-cfg")
    assert read_params(tmp_path) == (BootParams(hostname="from-fw-cfg"), "fw_cfg")
    (tmp_path / "etc/vr").mkdir(parents=True)
    (tmp_path / "etc/vr/boot-params").write_text("hostname=from-file\n")
    assert read_params(tmp_path)[0].hostname == "from-file"


def test_no_parameters_anywhere(tmp_path):
    assert read_params(tmp_path) == (None, "nowhere")


def test_files_written_from_the_parameters(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\told-name\n")
    write_files(full(), tmp_path)
    assert (tmp_path / "etc/hostname").read_text() == "r1\n"
    assert (tmp_path / "etc/hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tr1\n"
    keys = tmp_path / "root/.ssh/authorized_keys"
    assert keys.read_text() == KEY + "\n" and keys.stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "run/vr/boot.json").read_text())["control"] == "169.254.3.4/16"
