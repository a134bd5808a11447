"""MQAR generator: structure, determinism, power-law gaps, query-only labels, accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.mqar import IGNORE_INDEX, MQARSpec, generate, recall_accuracy


@pytest.mark.parametrize("filler", ["zeros", "random"])
@pytest.mark.parametrize("seq_len,pairs,vocab", [(32, 4, 64), (128, 8, 256), (256, 16, 8192)])
def test_structure(filler, seq_len, pairs, vocab):
    spec = MQARSpec(vocab_size=vocab, seq_len=seq_len, num_pairs=pairs, filler=filler)
    data = generate(spec, 50, seed=3)
    x, y = data["input_ids"].numpy(), data["labels"].numpy()
    assert x.shape == y.shape == (50, seq_len)
    assert x.min() >= 0 and x.max() < vocab
    keys, values = x[:, 0 : 2 * pairs : 2], x[:, 1 : 2 * pairs : 2]
    assert ((keys >= 1) & (keys < vocab // 2)).all() and ((values >= vocab // 2) & (values < vocab)).all()
    for i in range(len(x)):
        assert len(set(keys[i])) == pairs and len(set(values[i])) == pairs
        answer = dict(zip(keys[i], values[i]))
        positions = np.flatnonzero(y[i] != IGNORE_INDEX)
        assert len(positions) == pairs, "one labelled position per pair, nothing else"
        assert (positions >= 2 * pairs + 1).all(), "labels only in the query region"
        for p in positions:  # the token before each label is the query key, the label its value
            assert y[i, p] == answer[x[i, p - 1]]
        if filler == "zeros":
            query_region = x[i, 2 * pairs :]
            assert set(np.unique(query_region)) <= {0, *keys[i]}


def test_deterministic_from_seed_and_prefix_stable():
    spec = MQARSpec(vocab_size=128, seq_len=64, num_pairs=8, filler="random")
    a, b = generate(spec, 1500, seed=7), generate(spec, 1500, seed=7)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    short = generate(spec, 10, seed=7)
    assert torch.equal(short["input_ids"], a["input_ids"][:10]), "the first n examples must not depend on the total"
    other = generate(spec, 1500, seed=8)
    assert not torch.equal(other["input_ids"], a["input_ids"])


def test_gaps_follow_a_decreasing_power_law():
    spec = MQARSpec(vocab_size=512, seq_len=256, num_pairs=4, filler="zeros")
    y = generate(spec, 4000, seed=0)["labels"].numpy()
    slots = (np.argwhere(y != IGNORE_INDEX)[:, 1] - 2 * spec.num_pairs - 1) // 2
    counts = np.bincount(slots, minlength=(spec.seq_len - 2 * spec.num_pairs) // 2)
    assert counts[:10].sum() > counts[-10:].sum() * 3, "short gaps must be much more frequent than long ones"


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"filler": "ones"}, "filler"),
        ({"seq_len": 30, "num_pairs": 8}, "seq_len"),
        ({"vocab_size": 10, "num_pairs": 8}, "vocab_size"),
        ({"num_pairs": 0}, "num_pairs"),
    ],
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MQARSpec(**kwargs).validate()


def test_recall_accuracy_uses_query_positions_with_the_shift():
    labels = np.full((1, 6), IGNORE_INDEX)
    labels[0, 3], labels[0, 5] = 40, 41
    predictions = np.zeros((1, 6), dtype=np.int64)
    predictions[0, 2] = 40  # the prediction for position 3 is made at position 2
    assert recall_accuracy(predictions, labels) == 0.5
    predictions[0, 4] = 41
    assert recall_accuracy(predictions, labels) == 1.0
