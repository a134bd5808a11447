"""Language-model data: read text, check it, tokenize it and pack it into fixed-length blocks.

Accepted sources (``--data PATH``):

- a text file (``.txt``, ``.text``, ``.md``, ``.rst``, optionally gzip-compressed as ``.gz``);
- a folder: every such file under it, recursively, in sorted order;
- a folder written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict``: its ``train`` split,
  and ``validation``/``test`` for evaluation), with a text column (``--text-column``) or an already
  tokenized ``input_ids`` column.

Files are checked before anything is built (missing path, empty file, bytes that are not UTF-8 are
reported with the file and the byte offset), so a bad corpus fails in a second, not after the model
and the workers are up. Each file is a document: its tokens are followed by ``eos``. All tokens are
concatenated and cut into blocks of ``seq_len`` (static shapes for XLA/Neuron; remainders of at most
``seq_len - 1`` tokens per map batch are dropped, as in transformers' ``run_clm``).
"""

from __future__ import annotations

import codecs
import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from bmojo_neuron.tokenization import byte_level_tokenizer

TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
BUNDLED_DIR = Path(__file__).resolve().parent / "data"
BUNDLED_TRAIN = BUNDLED_DIR / "kjv_train.txt.gz"
BUNDLED_VALIDATION = BUNDLED_DIR / "kjv_validation.txt.gz"
_CHUNK_CHARS = 8192  # text per dataset row: small rows keep the batched map's Python lists small
_READ_BYTES = 1 << 20


class DataError(ValueError):
    """Bad user data; the message says which file and what is wrong."""


def _is_text_file(path: Path) -> bool:
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return name.endswith(TEXT_SUFFIXES) and not path.name.startswith(".")


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json"))


def resolve_text_files(path: str | os.PathLike) -> list[Path]:
    """The text files named by ``path`` (a file or a folder), sorted; ``DataError`` if there are none."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data path does not exist: {p}")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and _is_text_file(f))
    if not files:
        raise DataError(
            f"no text files under {p} (looked for {', '.join(TEXT_SUFFIXES)}, optionally .gz); "
            "for a dataset saved with save_to_disk, point at the folder holding dataset_info.json"
        )
    return files


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def check_text_file(path: Path) -> int:
    """Check that ``path`` is non-empty UTF-8 text; return its size in bytes (uncompressed).

    Raises ``DataError`` naming the file, and for bad bytes the byte offset and line of the first one.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line, has_text = 0, 1, False
    try:
        with _open_binary(path) as f:
            while block := f.read(_READ_BYTES):
                try:
                    text = decoder.decode(block)
                except UnicodeDecodeError as e:
                    bad = offset + e.start
                    line += block[: e.start].count(b"\n")
                    raise DataError(
                        f"{path}: not UTF-8 text: byte 0x{block[e.start]:02x} at offset {bad} (line {line}) "
                        "cannot be decoded; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                    ) from None
                has_text = has_text or bool(text.strip())
                offset += len(block)
                line += block.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text: the file ends in the middle of a multi-byte character") from None
    except (OSError, EOFError) as e:  # unreadable, or a truncated / invalid gzip stream
        raise DataError(f"{path}: cannot be read: {e}") from None
    if not has_text:
        raise DataError(f"{path}: the file is empty (no text besides whitespace)")
    return offset


def _read_documents(files: list[str], stamps: list[tuple[int, int]]) -> Iterator[dict]:
    """Rows of about ``_CHUNK_CHARS`` characters, cut at line ends; the last row of a file is flagged.

    ``stamps`` (size, mtime) is unused here but part of the generator's arguments, so the datasets
    cache is invalidated when a file changes.
    """
    del stamps
    for name in files:
        path = Path(name)
        with (
            gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")
        ) as f:
            buffer, size = [], 0
            for text_line in f:
                buffer.append(text_line)
                size += len(text_line)
                if size >= _CHUNK_CHARS:
                    yield {"text": "".join(buffer), "end_of_document": False}
                    buffer, size = [], 0
            yield {"text": "".join(buffer), "end_of_document": True}


def text_files_dataset(files: list[Path], cache_dir: str | None = None) -> datasets.Dataset:
    """Check ``files`` and load them as a dataset with columns ``text`` and ``end_of_document``."""
    for f in files:
        check_text_file(f)
    names = [str(f.resolve()) for f in files]
    stamps = [(f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return datasets.Dataset.from_generator(
        _read_documents, gen_kwargs={"files": names, "stamps": stamps}, cache_dir=cache_dir
    )


def load_saved_dataset(path: Path, text_column: str) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Load a ``save_to_disk`` folder: (train, eval or None), checking its columns and size."""
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{path}: the DatasetDict has no 'train' split (splits: {', '.join(loaded)})")
        train = loaded["train"]
        evaluation = next((loaded[s] for s in ("validation", "test") if s in loaded), None)
    else:
        train, evaluation = loaded, None
    for split in (train, evaluation):
        if split is None:
            continue
        if text_column not in split.column_names and "input_ids" not in split.column_names:
            raise DataError(
                f"{path}: no column {text_column!r} (nor 'input_ids'); columns are {split.column_names}; "
                "choose the text column with --text-column"
            )
        if split.num_rows == 0:
            raise DataError(f"{path}: the dataset is empty")
    return train, evaluation


def load_tokenizer(name_or_path: str | None) -> PreTrainedTokenizerBase:
    """``None`` or ``"byte"``: the project's byte-level tokenizer; otherwise a local HF tokenizer folder."""
    if name_or_path in (None, "", "byte"):
        return byte_level_tokenizer()
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise DataError(f"tokenizer folder does not exist: {path} (use 'byte' for the built-in tokenizer)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises several types; the user needs the message, not the trace
        raise DataError(f"cannot load a tokenizer from {path}: {e}") from None
    tokenizer.padding_side = "left"  # saved with the model: batched generation pads prompts on the left
    return tokenizer


def pack(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    seq_len: int,
    text_column: str = "text",
    num_proc: int | None = None,
) -> datasets.Dataset:
    """Tokenize ``dataset`` (unless it has ``input_ids``) and pack it into blocks of ``seq_len`` tokens.

    Returns a dataset with ``input_ids`` and ``labels`` (equal: the model shifts the labels) of length
    ``seq_len``. Rows flagged ``end_of_document`` (and every row of a saved text dataset, each being a
    document) are followed by ``eos``.
    """
    eos = tokenizer.eos_token_id
    pretokenized = "input_ids" in dataset.column_names

    def pack_batch(batch: dict) -> dict:
        if pretokenized:
            ids, ends = batch["input_ids"], [True] * len(batch["input_ids"])
        else:
            ids = tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]
            ends = batch.get("end_of_document", [True] * len(ids))
        pieces = []
        for row, end in zip(ids, ends):
            pieces.append(np.asarray(row, dtype=np.int64))
            if end and eos is not None:
                pieces.append(np.array([eos], dtype=np.int64))
        stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        blocks = stream[: len(stream) // seq_len * seq_len].reshape(-1, seq_len)
        return {"input_ids": blocks, "labels": blocks.copy()}

    return dataset.map(
        pack_batch,
        batched=True,
        batch_size=256,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"tokenizing and packing into blocks of {seq_len}",
    ).with_format("torch")


def build_lm_datasets(
    tokenizer: PreTrainedTokenizerBase,
    seq_len: int,
    data_path: str | None = None,
    eval_path: str | None = None,
    text_column: str = "text",
    validation_fraction: float = 0.01,
    cache_dir: str | None = None,
    num_proc: int | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Train and eval block datasets for ``--task lm``.

    Without ``data_path``, the bundled KJV corpus with its fixed split. Otherwise the eval set is, in
    order of preference: ``eval_path``; the saved dataset's ``validation``/``test`` split; the last
    ``validation_fraction`` of the packed blocks (a contiguous tail, so no text is in both sets).
    """
    if data_path is None:
        train_raw = text_files_dataset([BUNDLED_TRAIN], cache_dir)
        eval_raw = text_files_dataset([BUNDLED_VALIDATION], cache_dir)
    else:
        source = Path(data_path).expanduser()
        if _is_saved_dataset(source):
            train_raw, eval_raw = load_saved_dataset(source, text_column)
        else:
            train_raw, eval_raw = text_files_dataset(resolve_text_files(source), cache_dir), None
    if eval_path is not None:
        source = Path(eval_path).expanduser()
        if _is_saved_dataset(source):
            eval_raw = load_saved_dataset(source, text_column)[0]
        else:
            eval_raw = text_files_dataset(resolve_text_files(source), cache_dir)

    train = pack(train_raw, tokenizer, seq_len, text_column, num_proc)
    if eval_raw is None:
        n_eval = max(1, int(round(len(train) * validation_fraction)))
        if len(train) < 2:
            raise DataError(
                f"{data_path}: only {len(train)} block(s) of {seq_len} tokens: too little text to hold out "
                "an evaluation set (give --eval-data, more text, or a shorter --seq-len)"
            )
        train, evaluation = (
            train.select(range(len(train) - n_eval)),
            train.select(range(len(train) - n_eval, len(train))),
        )
    else:
        evaluation = pack(eval_raw, tokenizer, seq_len, text_column, num_proc)
    for name, split in (("training", train), ("evaluation", evaluation)):
        if len(split) == 0:
            raise DataError(
                f"the {name} data is shorter than one block of {seq_len} tokens; use more text or a shorter --seq-len"
            )
    return train, evaluation


__all__ = [
    "BUNDLED_TRAIN",
    "BUNDLED_VALIDATION",
    "DataError",
    "build_lm_datasets",
    "check_text_file",
    "load_saved_dataset",
    "load_tokenizer",
    "pack",
    "resolve_text_files",
    "text_files_dataset",
]
