"""`make image-test` inside the suite: build both image targets for real with podman, offline,
run each read-only and non-root, and compare its answer with the host pipeline's.

Slow (about 3 minutes warm; 6 to 8 cold, from nothing, on 2 busy cores); it needs root
and podman, runc and debootstrap, which .ci/run installs. It fails, never skips, without them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_image_builds_and_serves_read_only_as_non_root():
    result = subprocess.run(
        ["bash", str(ROOT / "docker" / "image-test.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    print(result.stdout)  # the sizes and timings, shown with -s or on failure
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for target in ("localhost/uninlu:image-test", "localhost/uninlu:image-test-onnx"):
        assert f"{target} started: read-only root, uid 1001, no capabilities" in result.stdout
    assert result.stdout.count("as on the host") == 2
    assert "PASSED" in result.stdout
