"""Shared test set-up: end-to-end tests need root (namespaces, nftables, daemons) and say so plainly."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="end-to-end tests need root (network namespaces, nftables, daemons)")
    for item in items:
        if "e2e" in item.nodeid.split("/"):
            item.add_marker(skip)
