"""Turns vr_scripts/ into Debian packages and publishes them in a GPG-signed apt repository.

packages.py builds the .debs, reprepro.py wraps reprepro, signing.py and hook.py handle the archive key,
publish.py and snapshot.py publish atomically, verify.py checks what routers will see, serve.py serves it;
commands.py is what the invoke tasks call.
"""
