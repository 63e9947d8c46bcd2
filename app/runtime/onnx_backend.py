"""The network in ONNX Runtime, behind the same Backend interface as app/runtime/torch_backend.py's
TorchBackend.

Why: on CPU, ONNX Runtime with int8 weights serves several times more requests per core than fp32
torch, and it lets the CPU image drop torch (about 750 MB) from its runtime stage. This module
must therefore never import torch: it needs numpy, onnxruntime and the tokenizer only.

The graphs come from app/tools/export_onnx.py (encoder.onnx, cross.onnx and their .int8.onnx
versions),
by default in the `onnx/` folder of the checkpoint directory. Text states are (length, hidden)
float32 numpy arrays.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.model.errors import CheckpointError
from app.model.padding import length_groups, padding_of

if TYPE_CHECKING:
    from app.model.pipeline import PromptRow

log = logging.getLogger(__name__)

# File names are shared with the exporter (kept here so that this module has no torch import).
ENCODER_FILE = "encoder.onnx"
CROSS_FILE = "cross.onnx"
INT8_SUFFIX = ".int8.onnx"
ONNX_DIR = "onnx"


def int8_name(name: str) -> str:
    return name.removesuffix(".onnx") + INT8_SUFFIX


def graph_paths(onnx_dir: Path, int8: bool) -> tuple[Path, Path]:
    """(encoder, cross) graph files in `onnx_dir`."""
    names = (ENCODER_FILE, CROSS_FILE)
    if int8:
        names = tuple(int8_name(n) for n in names)
    return onnx_dir / names[0], onnx_dir / names[1]


def _pad(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, T) int64 ids padded with 0, the (B, T) int64 mask of real tokens, and the lengths."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ids = np.zeros((len(seqs), int(lengths.max())), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
    return ids, mask, lengths


class OnnxBackend:
    """Two ONNX Runtime sessions: the first half (text windows and prompts) and the cross half."""

    def __init__(
        self,
        encoder_path: Path,
        cross_path: Path,
        name: str,
        threads: int | None = None,
        spinning: bool = False,
    ):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Idle worker threads sleep unless `spinning` (INTRA_OP_SPINNING): spinning burns a pod's
        # CPU quota and, on a busy node, steals the core the other thread waits for (2x slower).
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
        # No arena: it keeps the largest batch's activations for good (measured: peak RSS
        # 745 -> 566 MB over mixed batch sizes, no slower), and a pod's limit must cover peaks.
        options.enable_cpu_mem_arena = False
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(encoder_path), options, providers=providers)
        self.cross_session = ort.InferenceSession(str(cross_path), options, providers=providers)
        self.name = name
        self.threads = options.intra_op_num_threads
        self.padding_added: dict[str, int] = {}  # stage -> padding tokens of its last call

    def _encode(self, ids: np.ndarray, mask: np.ndarray, token_type: int, positions: np.ndarray):
        feeds = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": np.full_like(ids, token_type),
            "position_ids": positions,
        }
        return self.encoder.run(["states"], feeds)[0]

    def encode(self, windows: list[list[int]]) -> list[object]:
        out: list[object] = [None] * len(windows)
        lengths = [len(w) for w in windows]
        groups = length_groups(lengths)  # little padding per call
        self.padding_added["encode"] = padding_of(lengths, groups)
        for group in groups:
            ids, mask, lengths = _pad([windows[i] for i in group])
            positions = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy()
            states = self._encode(ids, mask, 0, positions)
            for k, i in enumerate(group):
                out[i] = states[k, : lengths[k]].copy()
        return out

    def score(self, rows: list[PromptRow]) -> list[tuple[np.ndarray, np.ndarray]]:
        if not rows:
            return []
        ids, mask, prompt_lens = _pad([r.prompt_ids for r in rows])
        offsets = np.array([r.position_offset for r in rows], dtype=np.int64)
        positions = offsets[:, None] + np.arange(ids.shape[1], dtype=np.int64)[None, :]
        positions = np.where(mask.astype(bool), positions, 0)  # padding: any valid index
        prompts = self._encode(ids, mask, 1, positions)
        # [text ; prompt] packed without a gap, as the torch backend does, in length groups.
        text_lens = [int(r.text_state.shape[0]) for r in rows]
        totals = [t + int(p) for t, p in zip(text_lens, prompt_lens, strict=True)]
        results: list = [None] * len(rows)
        groups = length_groups(totals)
        self.padding_added["score"] = padding_of(
            [int(p) for p in prompt_lens], [list(range(len(rows)))]
        ) + (padding_of(totals, groups))
        for group in groups:
            width = max(totals[i] for i in group)
            packed = np.zeros((len(group), width, prompts.shape[2]), dtype=np.float32)
            for k, i in enumerate(group):
                t = text_lens[i]
                packed[k, :t] = rows[i].text_state
                packed[k, t : totals[i]] = prompts[i, : prompt_lens[i]]
            lengths = np.array([totals[i] for i in group])
            cross_mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
            head, tail = self.cross_session.run(
                ["head", "tail"], {"states": packed, "attention_mask": cross_mask}
            )
            for k, i in enumerate(group):
                n = text_lens[i]
                results[i] = (head[k, :n].astype(np.float32), tail[k, :n].astype(np.float32))
        return results


def load_onnx_backend(
    model_path: str | Path,
    threads: int | None = None,
    int8: bool = False,
    onnx_dir: str | Path | None = None,
    spinning: bool = False,
):
    """(OnnxBackend, tokenizer) for a checkpoint directory whose `onnx/` folder (or `onnx_dir`)
    holds the exported graphs. A missing graph is a CheckpointError that says how to make it."""
    model_path = Path(model_path)
    folder = Path(onnx_dir) if onnx_dir else model_path / ONNX_DIR
    encoder_path, cross_path = graph_paths(folder, int8)
    for path in (encoder_path, cross_path):
        if not path.is_file():
            raise CheckpointError(
                f"missing ONNX graph {path}: run `python -m app.tools.export_onnx --model-path "
                f"{model_path} --out {folder}{' --int8' if int8 else ''}`"
            )
    name = "onnx-int8" if int8 else "onnx-fp32"
    backend = OnnxBackend(encoder_path, cross_path, name=name, threads=threads, spinning=spinning)
    from app.model.tokenizer import load_tokenizer  # imports transformers: only when serving

    tokenizer = load_tokenizer(model_path)
    log.info("loaded %s from %s (threads=%s)", name, folder, backend.threads)
    return backend, tokenizer
