"""The memory hit rate of MQAR: which queries find their value token in the eidetic memory."""

from __future__ import annotations

from bmojo_neuron import BMojoForCausalLM
from bmojo_neuron.testing import tiny_config
from training.mqar import IGNORE_INDEX, MQARSpec, generate, memory_hit_ceiling, memory_hit_rate


def test_hit_rate_counts_queries_whose_value_is_visible():
    # Every token of a chunk is a candidate and the memory holds 64 of them: nothing is ever evicted, so a
    # value (in chunk 0) is in memory exactly for the queries from chunk 0 + lag = 2 on (positions >= 16).
    config = tiny_config(["bmojo"], vocab_size=64, sliding_window=8, chunk_size=8, eidetic_topk=8, eidetic_slots=64)
    model = BMojoForCausalLM(config).eval()
    spec = MQARSpec(vocab_size=64, seq_len=64, num_pairs=4, filler="zeros")
    data = generate(spec, 32, seed=0)
    query_pos = (data["labels"] != IGNORE_INDEX).nonzero()[:, 1] - 1
    expected = float((query_pos >= 2 * config.chunk_size).float().mean())
    assert 0 < expected < 1
    assert memory_hit_rate(model, data["input_ids"], data["labels"], spec.num_pairs) == expected


def test_hit_rate_drops_when_the_memory_is_too_small():
    config = tiny_config(["bmojo"], vocab_size=64, sliding_window=8, chunk_size=8, eidetic_topk=1, eidetic_slots=1)
    spec = MQARSpec(vocab_size=64, seq_len=64, num_pairs=4, filler="zeros")
    data = generate(spec, 32, seed=0)
    rate = memory_hit_rate(BMojoForCausalLM(config).eval(), data["input_ids"], data["labels"], spec.num_pairs)
    assert rate < 0.5


def test_no_memory_no_hit_rate():
    model = BMojoForCausalLM(tiny_config(["sliding_attention"], vocab_size=64)).eval()
    data = generate(MQARSpec(vocab_size=64, seq_len=64, num_pairs=4), 4, seed=0)
    assert memory_hit_rate(model, data["input_ids"], data["labels"], 4) is None


def test_ceiling_is_the_rate_of_a_memory_that_never_evicts():
    # Same setting as the first test: a memory of 64 slots keeps everything, so it reaches the ceiling.
    config = tiny_config(["bmojo"], vocab_size=64, sliding_window=8, chunk_size=8, eidetic_topk=8, eidetic_slots=64)
    spec = MQARSpec(vocab_size=64, seq_len=64, num_pairs=4, filler="zeros")
    data = generate(spec, 32, seed=0)
    ceiling = memory_hit_ceiling(data["input_ids"], data["labels"], spec.num_pairs, 8, config.eidetic_lag)
    assert 0 < ceiling < 1
    assert memory_hit_rate(BMojoForCausalLM(config).eval(), data["input_ids"], data["labels"], 4) == ceiling
    # A longer lag can only hide more.
    assert memory_hit_ceiling(data["input_ids"], data["labels"], spec.num_pairs, 8, config.eidetic_lag + 2) < ceiling
