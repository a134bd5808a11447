"""Text data: clear errors before training, packing, the bundled corpus, saved datasets."""

from __future__ import annotations

import gzip

import datasets
import pytest

from bmojo_neuron.tokenization import byte_level_tokenizer
from training.data import (
    BUNDLED_TRAIN,
    BUNDLED_VALIDATION,
    DataError,
    build_lm_datasets,
    check_text_file,
    load_tokenizer,
    pack,
    resolve_text_files,
)


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_undecodable_bytes_are_located(tmp_path, name):
    path = _write(tmp_path / name, b"line one\nline two caf\xe9\n")
    with pytest.raises(DataError, match=r"not UTF-8.*0xe9 at offset 21 \(line 2\)"):
        check_text_file(path)


@pytest.mark.parametrize("content", [b"", b"  \n\n\t "])
def test_empty_file(tmp_path, content):
    with pytest.raises(DataError, match="empty"):
        check_text_file(_write(tmp_path / "empty.txt", content))


def test_truncated_multibyte_and_bad_gzip(tmp_path):
    with pytest.raises(DataError, match="middle of a multi-byte"):
        check_text_file(_write(tmp_path / "cut.txt", "ok é".encode()[:-1]))
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot be read"):
        check_text_file(bad)


def test_missing_path_and_folder_without_text(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_text_files(tmp_path / "nope")
    (tmp_path / "x.bin").write_bytes(b"\x00")
    with pytest.raises(DataError, match="no text files"):
        resolve_text_files(tmp_path)


def test_folder_is_read_recursively_in_order(tmp_path):
    _write(tmp_path / "b" / "2.txt", b"two")
    _write(tmp_path / "a.md", b"one")
    _write(tmp_path / ".hidden.txt", b"x")
    assert [p.name for p in resolve_text_files(tmp_path)] == ["a.md", "2.txt"]


def test_errors_surface_from_build_before_any_training(tmp_path, tokenizer):
    _write(tmp_path / "good.txt", b"fine text\n" * 50)
    _write(tmp_path / "zbad.txt", b"\xff\xfe")
    with pytest.raises(DataError, match="zbad.txt"):
        build_lm_datasets(tokenizer, 16, data_path=str(tmp_path), cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("seq_len", [7, 16])
def test_packing_is_exact_concatenation_with_eos(tmp_path, tokenizer, seq_len):
    docs = {"a.txt": "first document\nwith two lines\n", "b.txt": "second ✓\n"}
    for name, text in docs.items():
        _write(tmp_path / name, text.encode())
    train, _ = build_lm_datasets(
        tokenizer, seq_len, data_path=str(tmp_path), validation_fraction=0.2, cache_dir=str(tmp_path / "c")
    )
    eos = tokenizer.eos_token_id
    stream = [*docs["a.txt"].encode(), eos, *docs["b.txt"].encode(), eos]
    n_blocks = len(stream) // seq_len
    n_eval = max(1, round(n_blocks * 0.2))
    assert len(train) == n_blocks - n_eval
    for i, row in enumerate(train):
        assert row["input_ids"].tolist() == stream[i * seq_len : (i + 1) * seq_len]
        assert row["labels"].tolist() == row["input_ids"].tolist()


def test_saved_dataset_with_splits_and_pretokenized(tmp_path, tokenizer):
    text = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"body": ["alpha beta gamma " * 20] * 4}),
            "validation": datasets.Dataset.from_dict({"body": ["delta epsilon " * 20]}),
        }
    )
    text.save_to_disk(tmp_path / "text")
    train, evaluation = build_lm_datasets(tokenizer, 32, data_path=str(tmp_path / "text"), text_column="body")
    assert len(train) == (4 * (17 * 20 + 1)) // 32 and len(evaluation) == (14 * 20 + 1) // 32
    with pytest.raises(DataError, match="no column 'text'"):
        build_lm_datasets(tokenizer, 32, data_path=str(tmp_path / "text"))
    datasets.Dataset.from_dict({"input_ids": [list(range(100))] * 3}).save_to_disk(tmp_path / "ids")
    train, evaluation = build_lm_datasets(tokenizer, 10, data_path=str(tmp_path / "ids"), validation_fraction=0.1)
    assert train[0]["input_ids"].tolist() == list(range(10))


def test_too_little_text_for_a_block(tmp_path, tokenizer):
    _write(tmp_path / "short.txt", b"tiny")
    with pytest.raises(DataError, match="shorter than one block|too little text"):
        build_lm_datasets(tokenizer, 256, data_path=str(tmp_path / "short.txt"), cache_dir=str(tmp_path / "c"))


def test_bundled_corpus(tmp_path, tokenizer):
    assert BUNDLED_TRAIN.stat().st_size < 2_000_000 and BUNDLED_VALIDATION.exists()
    assert check_text_file(BUNDLED_VALIDATION) > 50_000
    raw = datasets.Dataset.from_dict({"text": [gzip.decompress(BUNDLED_VALIDATION.read_bytes()).decode()]})
    blocks = pack(raw, tokenizer, 128)
    assert tokenizer.decode(blocks[0]["input_ids"]).startswith("The Revelation of Jesus Christ")


def test_tokenizer_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing"))
    byte_level_tokenizer().save_pretrained(tmp_path / "tok")
    assert len(load_tokenizer(str(tmp_path / "tok"))) == 263
