"""The machine's fp32 matmul peak (app/tools/matmul_peak.py): measured, and printed as JSON."""

import json

from app.tools.matmul_peak import main, measure_matmul_peak


def test_matmul_peak_is_measured():
    peak = measure_matmul_peak(threads=1, sizes=(64,), seconds=0.05)
    assert peak["gflops"] > 0 and peak["size"] == 64 and peak["threads"] == 1


def test_cli_prints_the_peak_as_json(capsys):
    main(["--threads", "1", "--sizes", "64", "--seconds", "0.05"])
    peak = json.loads(capsys.readouterr().out)
    assert peak["gflops"] > 0 and peak["size"] == 64 and peak["threads"] == 1
