"""Task semantics on the tiny random checkpoint: character offsets, span decoding, and windows
over long texts with their overlaps averaged."""

import numpy as np
import pytest

from app.model.examples import load_examples
from app.model.pipeline import (
    MAX_LEN,
    STRIDE,
    PromptRow,
    decode_spans,
    merge_windows,
    predict,
    split_windows,
    tokenize_text,
    window_starts,
)
from tests.app.model.backend_wrappers import Recorder
from tests.app.model.long_text import LONG

EXAMPLES = load_examples()

# ---------------------------------------------------------------------------------------------
# offsets and span decoding


MIXED = "2024年，谷爱凌 won ABC-Cup 第1名！ 得分188.25分，全角：（ＸＹ） 和  空格。"


def test_tokenized_offsets_point_into_the_text(tokenizer):
    tokens = tokenize_text(tokenizer, MIXED)
    assert tokens.special.tolist() == [True] + [False] * (len(tokens.ids) - 2) + [True]
    pieces = [MIXED[s:e] for s, e in tokens.offsets[1:-1]]
    for piece, token in zip(pieces, tokenizer.convert_ids_to_tokens(tokens.ids[1:-1]), strict=True):
        assert piece, token
        if token != "[UNK]":
            assert piece.lower() == token.removeprefix("##")


def _logits_for(tokens, heads, tails):
    head = np.full(len(tokens.ids), -5.0)
    tail = np.full(len(tokens.ids), -5.0)
    head[heads] = 3.0
    tail[tails] = 3.0
    return head, tail


def test_decoding_gives_character_offsets_over_mixed_scripts(tokenizer):
    tokens = tokenize_text(tokenizer, MIXED)
    wanted = ["ABC-Cup", "谷爱凌", "188.25分", "（ＸＹ）", "2024年", "won"]
    heads, tails = [], []
    for word in wanted:
        begin = MIXED.index(word)
        end = begin + len(word)
        first = next(i for i, (s, _) in enumerate(tokens.offsets) if s == begin and i > 0)
        last = next(i for i, (_, e) in enumerate(tokens.offsets) if e == end and i > 0)
        heads.append(first)
        tails.append(last)
    spans = decode_spans(MIXED, tokens, *_logits_for(tokens, heads, tails))
    assert [MIXED[s:e] for s, e in spans] == sorted(wanted, key=MIXED.index)
    assert spans == sorted(spans)


def test_each_head_ends_at_the_first_tail_at_or_after_it(tokenizer):
    text = "北京欢迎你"
    tokens = tokenize_text(tokenizer, text)  # [CLS] 北 京 欢 迎 你 [SEP]
    spans = decode_spans(text, tokens, *_logits_for(tokens, [1, 3, 5], [2, 3, 4]))
    # 北 -> 京, 欢 -> 欢 (a tail on the head itself), 你 has no tail at or after it
    assert spans == [(0, 2), (2, 3)]


def test_special_tokens_never_start_or_end_a_span(tokenizer):
    text = "北京欢迎你"
    tokens = tokenize_text(tokenizer, text)
    last = len(tokens.ids) - 1
    assert decode_spans(text, tokens, *_logits_for(tokens, [0], [1])) == []
    assert decode_spans(text, tokens, *_logits_for(tokens, [2], [last])) == []
    assert decode_spans(text, tokens, *_logits_for(tokens, [0, 2], [last, 3])) == [(1, 3)]


def test_threshold_is_strictly_above_half_on_raw_logits(tokenizer):
    text = "北京"
    tokens = tokenize_text(tokenizer, text)
    head = np.array([0.0, 0.5, 0.5000001, 0.0])
    tail = np.array([0.0, 0.0, 0.51, 0.0])
    assert decode_spans(text, tokens, head, tail) == [(1, 2)]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["task"])
def test_every_span_is_the_text_at_its_offsets(backend, tokenizer, example):
    for chain in predict(backend, tokenizer, example["text"], example["schema"], True):
        for item in chain:
            start, end = item["offset"]
            assert 0 <= start < end <= len(example["text"])
            assert item["span"] == example["text"][start:end]


def test_spans_in_mixed_text_from_the_model(backend, tokenizer):
    output = predict(backend, tokenizer, MIXED * 3, {"实体": None, "数字": None})
    assert output
    for (item,) in output:
        assert item["span"] == (MIXED * 3)[slice(*item["offset"])]


# ---------------------------------------------------------------------------------------------
# windows


def test_window_starts():
    assert window_starts(5) == [0]
    assert window_starts(MAX_LEN) == [0]
    assert window_starts(MAX_LEN + 1) == [0, STRIDE]
    assert window_starts(1250) == [0, 352, 704, 1056]
    ids = list(range(1250))
    windows, offset = split_windows(ids)
    assert offset == MAX_LEN
    assert [len(w) for w in windows] == [384, 384, 384, 194]
    assert windows[1][0] == 352 and windows[-1][-1] == 1249
    assert split_windows(ids[:100]) == ([ids[:100]], 100)


def _direct_spans(backend, tokenizer, text, node):
    """ModelScope's algorithm written out plainly: each window alone, then for each token the
    mean over the windows that cover it, then the head/tail rule token by token."""
    tokens = tokenize_text(tokenizer, text)
    n = len(tokens.ids)
    prompt = tokenizer([f"{node}: "])["input_ids"][0]
    heads = [[] for _ in range(n)]
    tails = [[] for _ in range(n)]
    for start in range(0, n, STRIDE):
        window = tokens.ids[start : start + MAX_LEN]
        (state,) = backend.encode([window])
        ((h, t),) = backend.score([PromptRow(state, prompt, MAX_LEN)])
        for j in range(len(window)):
            heads[start + j].append(float(h[j]))
            tails[start + j].append(float(t[j]))
        if start + MAX_LEN >= n:
            break
    head = [sum(v) / len(v) for v in heads]
    tail = [sum(v) / len(v) for v in tails]
    spans = []
    for i in range(1, n - 1):
        if head[i] > 0.5:
            for j in range(i, n - 1):
                if tail[j] > 0.5:
                    spans.append((int(tokens.offsets[i][0]), int(tokens.offsets[j][1])))
                    break
    return sorted(spans), np.array(head), np.array(tail)


def test_long_text_is_windowed_and_overlaps_are_averaged(backend, tokenizer):
    assert len(LONG) >= 1200
    recorder = Recorder(backend)
    output = predict(recorder, tokenizer, LONG, {"车站": None}, call_tokens=None)
    n_tokens = len(tokenize_text(tokenizer, LONG).ids)
    (windows,) = recorder.windows
    assert len(windows) == len(window_starts(n_tokens)) >= 3
    assert all(len(w) == MAX_LEN for w in windows[:-1])
    assert {r.position_offset for r in recorder.rows[0]} == {MAX_LEN}

    spans, head, tail = _direct_spans(backend, tokenizer, LONG, "车站")
    assert [tuple(item["offset"]) for (item,) in output] == spans
    assert spans, "the tiny checkpoint should find spans in the long text"
    merged_head, merged_tail = merge_windows(n_tokens, recorder.inner.score(recorder.rows[0]))
    np.testing.assert_allclose(merged_head, head, atol=1e-5)
    np.testing.assert_allclose(merged_tail, tail, atol=1e-5)
    overlap = range(STRIDE, MAX_LEN)  # tokens covered by windows 0 and 1
    (h0, _), (h1, _) = recorder.inner.score(recorder.rows[0][:2])
    np.testing.assert_allclose(
        merged_head[list(overlap)], (h0[STRIDE:] + h1[: MAX_LEN - STRIDE]) / 2, atol=1e-6
    )


def test_merge_windows_is_the_mean_over_covering_windows():
    n = MAX_LEN + 10  # two windows: 0..383 and 352..393
    first = (np.full(MAX_LEN, 1.0, np.float32), np.full(MAX_LEN, 2.0, np.float32))
    second = (np.full(n - STRIDE, 3.0, np.float32), np.full(n - STRIDE, 6.0, np.float32))
    head, tail = merge_windows(n, [first, second])
    assert head[:STRIDE].tolist() == [1.0] * STRIDE
    assert head[STRIDE:MAX_LEN].tolist() == [2.0] * (MAX_LEN - STRIDE)
    assert head[MAX_LEN:].tolist() == [3.0] * (n - MAX_LEN)
    assert tail[STRIDE:MAX_LEN].tolist() == [4.0] * (MAX_LEN - STRIDE)
