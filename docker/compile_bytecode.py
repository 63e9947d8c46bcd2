"""The image's bytecode stage: precompile only the modules the server really imports.

Why: the root filesystem is read-only at run time, so Python cannot cache bytecode there, and
compiling torch and transformers from source on every start costs seconds (about 13 s more on
2 cores). Compiling the whole virtualenv instead (pip's default) adds about 230 MB to the image;
the modules that serving imports are about a third of that. So: load the model and answer one
prediction as the server does, then write a hash-checked .pyc for every module that was loaded,
plus the whole web stack (imported on the first request), into PYTHONPYCACHEPREFIX.

    PYTHONPYCACHEPREFIX=/opt/pycache MODEL_PATH=DIR [BACKEND=onnx] python compile_bytecode.py
"""

from __future__ import annotations

import compileall
import importlib
import importlib.util
import py_compile
import sys
from pathlib import Path

# Packages the HTTP server imports piecemeal while serving (protocols, loops, routing).
WEB_PACKAGES = ("app", "uvicorn", "fastapi", "starlette", "pydantic", "anyio", "h11")


def warm_up() -> None:
    """Load the model with the server's own loader and settings (MODEL_PATH, BACKEND from the
    environment) and run one prediction: what a pod does before it reports /ready."""
    from app.model.pipeline import parse_schema, predict
    from app.serving.server import default_loader
    from app.serving.settings import Settings

    backend, tokenizer = default_loader(Settings.from_env())
    predict(backend, tokenizer, "小林在杭州工作。", parse_schema({"人物": None, "地点": None}))


def compile_loaded() -> int:
    """Write a checked-hash .pyc for every loaded module's source (valid whatever the mtimes)."""
    count = 0
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if not source or not source.endswith(".py") or not Path(source).is_file():
            continue
        py_compile.compile(
            source,
            cfile=importlib.util.cache_from_source(source),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )
        count += 1
    for name in WEB_PACKAGES:
        spec = importlib.util.find_spec(name)
        for location in spec.submodule_search_locations or ():
            compileall.compile_dir(
                location,
                quiet=1,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
    return count


def main(argv: list[str]) -> int:
    if argv or sys.pycache_prefix is None:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    warm_up()
    count = compile_loaded()
    print(f"compile_bytecode: {count} loaded modules compiled into {sys.pycache_prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
