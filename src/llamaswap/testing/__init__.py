"""Test and demo helpers; `python -m llamaswap.testing.fake_upstream` runs a fake upstream."""
