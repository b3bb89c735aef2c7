"""What the orchestration tests boot routers from: the template the image tests share (built once per
test session, reused while its sources are unchanged), its rootfs for containers and its qcow2 for VMs.
VRPIPE_TEST_ROOTFS=DIR and VRPIPE_TEST_IMAGE=QCOW2 boot routers from other ones instead (say, a copy
taken while someone else rebuilds the template).
"""

import os
from pathlib import Path

from .image_fixtures import shared_template


def router_rootfs():
    override = os.environ.get("VRPIPE_TEST_ROOTFS")
    return Path(override) if override else shared_template().rootfs_dir


def router_image():
    override = os.environ.get("VRPIPE_TEST_IMAGE")
    return Path(override) if override else shared_template().output("qcow2")
