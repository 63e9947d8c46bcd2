"""`python -m app`: serve (default), or `predict` one text from the command line."""

from __future__ import annotations

import argparse
import json
import sys


def _predict(args: argparse.Namespace) -> int:
    """The server's call size and limits (from the same environment settings), unless
    --no-limits lifts the limits on purpose; backend calls stay within MAX_BATCH_TOKENS, which
    bounds peak memory."""
    from app.model.errors import UninluError
    from app.model.pipeline import parse_schema, predict
    from app.runtime.torch_backend import load_backend
    from app.serving.settings import Settings

    try:
        settings = Settings.from_env()
        lifted = args.no_limits
        if not lifted and len(args.text) > settings.max_text_chars:
            raise ValueError(
                f"text has {len(args.text)} characters; the limit is MAX_TEXT_CHARS="
                f"{settings.max_text_chars} (--no-limits lifts it)"
            )
        schema = parse_schema(
            args.schema,
            None if lifted else settings.max_schema_depth,
            None if lifted else settings.max_schema_nodes,
        )
        if args.onnx_dir and not args.backend.startswith("onnx"):
            raise ValueError("--onnx-dir needs --backend onnx or onnx-int8")
        backend, tokenizer = load_backend(
            args.model_path,
            device=args.device,
            threads=args.threads,
            kind=args.backend,
            onnx_dir=args.onnx_dir,
        )
        output = predict(
            backend,
            tokenizer,
            args.text,
            schema,
            args.output_all_prefix,
            call_tokens=settings.max_batch_tokens,
            max_prompt_rows=None if lifted else settings.max_prompt_rows,
            max_cost=None if lifted else settings.max_request_cost,
        )
    except (UninluError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"output": output}, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the HTTP model server (the default)")
    p = sub.add_parser("predict", help="extract from one text and print the JSON result")
    p.add_argument("--model-path", required=True, help="ModelScope checkpoint directory")
    p.add_argument("--text", required=True)
    p.add_argument("--schema", required=True, help="JSON, e.g. '{\"人物\": null}'")
    p.add_argument("--output-all-prefix", action="store_true", help="also output inner chains")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnx", "onnx-int8"),
        help="the model backend (the server's BACKEND setting); default torch",
    )
    p.add_argument(
        "--onnx-dir", help="folder of the exported graphs (default: MODEL_PATH/onnx; onnx only)"
    )
    p.add_argument(
        "--no-limits",
        action="store_true",
        help="lift MAX_TEXT_CHARS, MAX_SCHEMA_*, MAX_PROMPT_ROWS and MAX_REQUEST_COST (the "
        "server's limits, read from the same environment); backend calls stay within "
        "MAX_BATCH_TOKENS",
    )
    args = parser.parse_args(argv)
    if args.command == "predict":
        return _predict(args)
    from app.serving.server import (
        serve,  # settings come from the environment (app/serving/settings.py)
    )

    return serve()


if __name__ == "__main__":
    sys.exit(main())
