"""The README's training commands parse, never share a run folder silently, and its inference examples use a
text model that one of them trains."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from training.config import parse

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    return text[start : text.index("\n## ", start + 1)]


def _train_commands() -> list[list[str]]:
    commands = []
    for line in _section("Training").splitlines():
        if not line.startswith(("python -m training.train", "torchrun ")):
            continue
        words = shlex.split(line.split("#")[0])
        if "training.train" in words and "..." not in words and "DATA" not in words:
            commands.append(words[words.index("training.train") + 1 :])
    return commands


def test_training_commands_write_to_distinct_folders():
    folders = {}
    for argv in _train_commands():
        if "--data" in argv or "--print-params" in argv:  # a user's corpus; or nothing written
            continue
        config, _ = parse(argv)
        if not config.train.resume:
            assert config.train.output_dir not in folders, (
                f"{argv} writes to {config.train.output_dir}, as {folders.get(config.train.output_dir)} does"
            )
            folders[config.train.output_dir] = argv
    assert len(folders) >= 4


def test_inference_examples_use_a_text_model_the_readme_trains():
    trained = {}
    for argv in _train_commands():
        if "--data" not in argv and "--print-params" not in argv:
            config, _ = parse(argv)
            trained[config.train.output_dir] = config.task
    models = re.findall(r"-m inference\.\w+ --model (\S+)", _section("Inference"))
    assert models and all(trained.get(model) == "lm" for model in models), (models, trained)
