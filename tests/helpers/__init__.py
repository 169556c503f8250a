"""Code the test files share: toy images, tiny model settings, torch threads, workflow runs.

Test modules import from here (``from helpers.images import ellipses``; pytest puts tests/ on the
path through tests/conftest.py), never from another test module, so that moving or deleting a test
file cannot break an unrelated one.
"""
