"""The peer: the ModelScope `siamese-uie` pipeline served the seed's way, for `python -m bench`.

FastAPI with a plain `def` endpoint (so requests run in Starlette's thread pool, sharing the
worker's one pipeline and its fast tokenizer: "Already borrowed" under concurrency), 2 uvicorn
worker processes (`uvicorn peer_server:app --workers 2`, bench/peer.py), one pipeline per
worker, built when the worker imports this module.
Runs in its own virtualenv (.venv-peer, bench/requirements-peer.txt: ModelScope needs
transformers < 5) and imports nothing from this project. Settings from the environment:
MODEL_PATH (the checkpoint directory).
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field


def _load_pipeline():
    from modelscope.pipelines import pipeline

    return pipeline("siamese-uie", model=os.environ["MODEL_PATH"])


app = FastAPI(title="ModelScope siamese-uie (seed-style peer)")
# Each uvicorn worker process imports this module and builds its own pipeline.
PIPELINE = _load_pipeline() if os.environ.get("MODEL_PATH") else None


@app.get("/ready")
def ready() -> dict:
    return {"status": "ok" if PIPELINE is not None else "no MODEL_PATH"}


class PredictBody(BaseModel):
    text: str
    schema_: dict = Field(alias="schema")


@app.post("/predict")
def predict(body: PredictBody):
    try:
        return PIPELINE(input=body.text, schema=body.schema_)
    except Exception as exc:  # the seed answered every pipeline failure with a 500 and its text
        return JSONResponse(status_code=500, content={"error": f"{type(exc).__name__}: {exc}"})
