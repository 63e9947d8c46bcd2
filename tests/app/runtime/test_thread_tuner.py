"""Adaptive torch thread count (THREAD_TUNING=adaptive, issue 14): the tuner's choices from
given measurements, and the real torch backend running each call with the count it picked."""

from __future__ import annotations

import threading

import pytest
import torch

from app.model.pipeline import predict
from app.runtime.thread_tuner import ThreadTuner, size_class
from app.runtime.torch_backend import TorchBackend, load_backend

TEXT = "今天上午，小林在杭州西湖边买了两杯龙井茶。"
SCHEMA = {"人物": None, "地理位置": None}


def feed(
    tuner: ThreadTuner, stage: str, cost: dict[int, float], calls: int, tokens: int = 100
) -> list[int]:
    """`calls` calls of `stage`, each taking cost[threads] seconds per token; the picks."""
    picks = []
    for _ in range(calls):
        n = tuner.pick(stage, tokens)
        tuner.record(stage, tokens, n, seconds=cost[n] * tokens)
        picks.append(n)
    return picks


def test_each_count_is_measured_once_then_the_faster_one_runs():
    tuner = ThreadTuner(2, explore_every=8)
    picks = feed(tuner, "encode", {2: 1.0, 1: 1.6}, 7)
    assert picks == [2, 1, 2, 2, 2, 2, 2]
    assert tuner.preferred("encode", 100) == 2


def test_the_slower_count_is_tried_every_explore_every_calls():
    tuner = ThreadTuner(4, explore_every=5)
    picks = feed(tuner, "score", {4: 1.0, 1: 3.0}, 20)
    assert [i + 1 for i, n in enumerate(picks) if n == 1] == [2, 5, 10, 15, 20]
    assert set(picks) == {4, 1}


def test_a_taken_core_moves_calls_to_one_thread_and_its_return_moves_them_back():
    """Quiet: 2 threads are 1.5x as fast. A neighbour takes a core: 2 threads stall at every
    barrier (2.5x slower), 1 thread keeps a core. The neighbour leaves: the exploration calls
    see 2 threads fast again."""
    tuner = ThreadTuner(2, explore_every=4)
    quiet, taken = {2: 1.0, 1: 1.5}, {2: 2.5, 1: 1.5}
    feed(tuner, "score", quiet, 12)
    assert tuner.preferred("score", 100) == 2
    picks = feed(tuner, "score", taken, 40)
    assert tuner.preferred("score", 100) == 1
    assert picks[-20:].count(1) >= 15  # most calls run on one thread once it has learned
    picks = feed(tuner, "score", quiet, 40)
    assert tuner.preferred("score", 100) == 2
    assert picks[-20:].count(2) >= 15


def test_stages_are_tuned_apart():
    """Encode and score calls alternate and differ in shape: one stage's speeds never decide
    the other's count, and each stage explores on its own call count."""
    tuner = ThreadTuner(2, explore_every=4)
    for _ in range(12):
        feed(tuner, "encode", {2: 1.0, 1: 2.0}, 1)
        feed(tuner, "score", {2: 3.0, 1: 1.0}, 1)
    assert (tuner.preferred("encode", 100), tuner.preferred("score", 100)) == (2, 1)


def test_small_and_large_calls_are_tuned_apart():
    """Measured on an EPYC: one row gains nothing from a second thread (236 against 209 ms),
    eight rows do (1132 against 1355 ms). Sizes within a factor of 4 share their averages."""
    assert size_class(130) == size_class(500) != size_class(1000) != size_class(5000)
    assert size_class(0) == 0
    tuner = ThreadTuner(2, explore_every=4)
    for _ in range(12):
        feed(tuner, "score", {2: 2.36, 1: 2.09}, 1, tokens=120)
        feed(tuner, "score", {2: 1.41, 1: 1.69}, 1, tokens=960)
    assert (tuner.preferred("score", 120), tuner.preferred("score", 960)) == (1, 2)
    assert tuner.preferred("score", 50_000) is None  # never measured


def test_one_thread_has_nothing_to_choose_and_empty_calls_say_nothing():
    tuner = ThreadTuner(1)
    assert tuner.candidates == (1,)
    assert {tuner.pick("encode", 10) for _ in range(10)} == {1}
    two = ThreadTuner(2)
    two.record("encode", 0, 2, seconds=5.0)
    two.record("encode", 10, 3, seconds=1.0)  # not a candidate
    assert two.preferred("encode", 10) is None
    assert two.pick("encode", 10) == 2


@pytest.mark.parametrize(("most", "explore"), [(0, 16), (2, 1)])
def test_bad_arguments_are_refused(most, explore):
    with pytest.raises(ValueError):
        ThreadTuner(most, explore_every=explore)


class RecordingTuner(ThreadTuner):
    """A real tuner that also notes what it picked and what it was told."""

    def __init__(self, most: int, **kw):
        super().__init__(most, **kw)
        self.records: list[tuple[str, int, float, int]] = []

    def record(self, stage, tokens, threads, seconds):
        self.records.append((stage, threads, seconds, tokens))
        super().record(stage, tokens, threads, seconds)


def test_the_torch_backend_runs_each_call_with_the_picked_count_from_the_worker_thread(
    tiny_model_dir,
):
    """OpenMP's thread count is per calling thread: the backend sets it in the thread that makes
    the call (the batcher's worker), and the answers do not depend on it."""
    fixed, tokenizer = load_backend(tiny_model_dir, device="cpu", threads=2)
    assert fixed.tuner is None
    expected = predict(fixed, tokenizer, TEXT, SCHEMA)
    tuner = RecordingTuner(2, explore_every=3)
    tuned = TorchBackend(fixed.model, fixed.device, fixed.dtype, tuner)
    seen: list[tuple[dict, int]] = []
    outputs: list = []

    def worker():
        for _ in range(6):
            outputs.append(predict(tuned, tokenizer, TEXT, SCHEMA))
            seen.append((dict(tuned.threads_used), torch.get_num_threads()))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=120)
    assert outputs == [expected] * 6
    stages = {stage for stage, *_ in tuner.records}
    assert stages == {"encode", "score"}
    assert {threads for _, threads, _, _ in tuner.records} == {1, 2}
    assert all(seconds > 0 and tokens > 0 for _, _, seconds, tokens in tuner.records)
    # The worker's own OpenMP count is the one its last call ran with.
    for used, worker_threads in seen:
        assert worker_threads == used["score"]


def test_the_tokens_of_a_call_are_what_the_tuner_is_told(tiny_model_dir):
    base, tokenizer = load_backend(tiny_model_dir, device="cpu", threads=1)
    tuner = RecordingTuner(2)
    tuned = TorchBackend(base.model, base.device, base.dtype, tuner)
    windows = [tokenizer(t)["input_ids"] for t in ("小林在杭州", "今天上午小林在杭州西湖边")]
    tuned.encode(windows)
    assert tuner.records[-1][0] == "encode"
    assert tuner.records[-1][3] == sum(len(w) for w in windows)


def test_load_backend_tunes_torch_on_cpu_only_when_asked(tiny_model_dir):
    adaptive, _ = load_backend(tiny_model_dir, device="cpu", threads=2, adaptive_threads=True)
    assert adaptive.tuner is not None and adaptive.tuner.candidates == (2, 1)
    int8, _ = load_backend(
        tiny_model_dir, device="cpu", threads=2, kind="torch-int8", adaptive_threads=True
    )
    assert int8.tuner is not None and int8.tuner.candidates == (2, 1)
    fixed, _ = load_backend(tiny_model_dir, device="cpu", threads=2)
    assert fixed.tuner is None
