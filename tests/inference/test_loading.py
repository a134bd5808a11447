"""Loading is strict: tensors that do not match the config, NaN weights and damaged files are errors that
name what is wrong; the export cleans up after itself; the saved tokenizer pads on the left."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from bmojo_neuron.testing import tiny_model
from bmojo_neuron.tokenization import byte_level_tokenizer
from inference import export as exporter
from inference import generate as cli
from inference.loading import ModelLoadError, load_model_and_tokenizer
from tests.helpers.cache import SHORT_WINDOWS

WEIGHTS = "model.safetensors"


@pytest.fixture
def model_dir(saved_model_dir, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(saved_model_dir, path)
    return path


def _edit_weights(path, edit):
    tensors = load_file(path / WEIGHTS)
    edit(tensors)
    save_file(tensors, path / WEIGHTS, metadata={"format": "pt"})


def test_missing_and_unexpected_tensors_are_named(model_dir):
    def edit(tensors):
        del tensors["model.layers.1.input_layernorm.weight"]
        tensors["model.layers.9.extra"] = torch.zeros(3)

    _edit_weights(model_dir, edit)
    with pytest.raises(ModelLoadError) as err:
        load_model_and_tokenizer(model_dir)
    message = str(err.value)
    assert "missing tensors: model.layers.1.input_layernorm.weight" in message
    assert "unexpected tensors: model.layers.9.extra" in message
    model, _ = load_model_and_tokenizer(model_dir, strict=False)  # asked for: loads with a warning
    assert model is not None


def test_a_changed_layer_count_does_not_load(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    config["num_hidden_layers"] += 1
    config["layer_types"].append("ssm")
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"missing tensors: model\.layers\.3\."):
        load_model_and_tokenizer(model_dir)


def test_tied_output_embedding_is_not_missing(tmp_path):
    model = tiny_model(["bmojo", "ssm"], tie_word_embeddings=True, **SHORT_WINDOWS)
    model.save_pretrained(tmp_path)
    assert "lm_head.weight" not in load_file(tmp_path / WEIGHTS)
    loaded, _ = load_model_and_tokenizer(tmp_path)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


def test_non_finite_weights_are_reported(model_dir):
    def edit(tensors):
        tensors["model.embed_tokens.weight"][3, 4] = float("nan")

    _edit_weights(model_dir, edit)
    with pytest.raises(ModelLoadError, match=r"NaN or infinite values: model\.embed_tokens\.weight"):
        load_model_and_tokenizer(model_dir)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors_is_a_one_line_error_naming_the_file(model_dir, capsys, damage):
    data = (model_dir / WEIGHTS).read_bytes()
    (model_dir / WEIGHTS).write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 64)
    assert cli.main(["--model", str(model_dir), "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and str(model_dir / WEIGHTS) in err[-1] and len(err) <= 2


@pytest.mark.parametrize("file", ["tokenizer.json", "tokenizer_config.json"])
def test_corrupt_tokenizer_file_is_a_one_line_error_naming_it(model_dir, capsys, file):
    (model_dir / file).write_text('{"version": "1.0", "truncation": nul')
    assert cli.main(["--model", str(model_dir), "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and str(model_dir / file) in err[-1] and "Traceback" not in err[-1]


def test_saved_tokenizer_pads_on_the_left(tmp_path):
    from transformers import AutoTokenizer

    byte_level_tokenizer().save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.padding_side == "left"
    batch = tokenizer(["a", "abc"], padding=True).input_ids
    assert batch[0][0] == tokenizer.pad_token_id and batch[0][-1] == ord("a")


def test_failed_export_removes_the_folder_it_created(saved_model_dir, tmp_path, capsys, monkeypatch):
    from inference import static_export

    def broken(module, example, path):
        path.write_bytes(b"half a graph")
        raise RuntimeError("the compiler failed")

    monkeypatch.setattr(static_export, "_torch_export", broken)
    out = tmp_path / "export"
    args = ["--model", str(saved_model_dir), "--out", str(out), "--target", "cpu", "--buckets", "8"]
    assert exporter.main(args) == 2
    err = capsys.readouterr().err
    assert "the compiler failed" in err and "tracing for cpu" in err, "a progress bar shows the tracing"
    assert not out.exists(), "a failed export must not leave its folder behind"
    existing = tmp_path / "mine"
    existing.mkdir()
    assert exporter.main([*args[:3], str(existing), *args[4:]]) == 2
    assert existing.is_dir(), "a folder the user made is left in place"


def test_export_module_keeps_its_public_names():
    from inference import static_export

    assert exporter.DEFAULT_BUCKETS == static_export.DEFAULT_BUCKETS
    assert exporter.ExportedBMojo is static_export.ExportedBMojo and exporter.export is static_export.export


def test_failed_neuron_export_leaves_no_folder(saved_model_dir, tmp_path, capsys):
    try:
        import torch_neuronx  # noqa: F401
    except ImportError:
        out = tmp_path / "neuron-export"
        args = ["--model", str(saved_model_dir), "--out", str(out), "--target", "neuron", "--buckets", "8"]
        assert exporter.main(args) == 2
        assert "torch-neuronx" in capsys.readouterr().err
        assert not out.exists()
    else:
        pytest.skip("torch-neuronx is installed: the neuron export would succeed")
