"""Benchmarks of the uninlu model server (not tests): `make bench` = `python -m bench`."""
