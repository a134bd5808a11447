"""The results page (docs/results.md) from results JSON (benchmarks/report.py) and the figures (benchmarks/plots.py)."""

from __future__ import annotations

import json

from benchmarks import plots, report

LM_FIXTURE = {
    "meta": {
        "timestamp": "2026-01-01T00:00:00+00:00", "git_sha": "0123456789abcdef", "git_dirty": False,
        "cpu_count": 2, "platform": "Linux", "torch": "2.13.0", "transformers": "5.23.0", "mode": "full",
        "wall_seconds": 900.0,
        "settings": {"factors": [1, 2], "seq_len": 256, "train_tokens": 1000},
        "targets": [{"target": "bmojo perplexity better than ssm", "measured": "4.1 vs 4.3", "met": True}],
    },
    "rows": [
        {"arm": "attention", "non_embedding_params": 1000, "runs": 3, "ppl_1x": 4.0, "ppl_2x": 9.5},
        {"arm": "bmojo", "non_embedding_params": 1001, "runs": 3, "ppl_1x": 4.1, "ppl_2x": 4.2},
    ],
}  # fmt: skip
SPEED_FIXTURE = {
    "meta": {"quick": True, "torch": "2.13.0"},
    "rows": [
        {"model": "bmojo", "threads": 1, "seq": 512, "tokens_per_s": 400.0, "peak_extra_mb": 300.0},
        {"model": "bmojo", "threads": 1, "seq": 2048, "tokens_per_s": 650.0, "peak_extra_mb": 900.0},
        {"threads": 1, "target": "bmojo / llama", "value": 1.1, "goal": ">= 0.8", "met": True},
    ],
}


def _results(tmp_path):
    (tmp_path / "lm.json").write_text(json.dumps(LM_FIXTURE))
    (tmp_path / "train_speed_quick.json").write_text(json.dumps(SPEED_FIXTURE))
    return tmp_path


def test_section_shows_the_json_numbers_provenance_and_targets(tmp_path):
    section = report.build_section(_results(tmp_path))
    assert "| attention | 1000 | 3 | 4 | 9.5 |" in section
    assert "commit 0123456789" in section and "full run" in section.split("### Training")[0]
    assert "| bmojo perplexity better than ssm | 4.1 vs 4.3 | yes |" in section
    assert "| 1 | bmojo / llama | 1.1 | >= 0.8 | yes |" in section  # target rows get their own table
    assert "Quick mode" in section.split("### Training speed")[1]
    assert ".png" not in section  # no figure is linked before a run drew it


def test_figures_are_linked_once_drawn_and_state_the_run_count(tmp_path):
    results = _results(tmp_path)
    drawn = plots.plot_all(results)
    assert sorted(p.name for p in drawn) == ["lm_length.png", "train_speed_quick_length.png"]
    section = report.build_section(results)
    assert "lm_length.png)" in section and "train_speed_quick_length.png)" in section


def test_figures_are_linked_relative_to_the_page(tmp_path):
    results = _results(tmp_path)
    plots.plot_all(results)
    (tmp_path / "docs").mkdir()
    section = report.build_section(results, tmp_path / "docs")
    assert "](../lm_length.png)" in section  # the page is docs/results.md, the figures are not under docs/


def test_page_is_edited_only_between_the_markers(tmp_path, capsys):
    results = _results(tmp_path)
    page = tmp_path / "results.md"
    page.write_text(f"# Title\nintro\n{report.START}\nold results\n{report.END}\nfooter\n")
    assert report.main(["--page", str(page), "--results", str(results)]) == 0
    text = page.read_text()
    assert text.startswith("# Title\nintro\n" + report.START + "\n## Measurements")
    assert text.endswith(report.END + "\nfooter\n") and "old results" not in text

    bare = tmp_path / "BARE.md"
    bare.write_text("# no markers\n")
    assert report.main(["--page", str(bare), "--results", str(results)]) == 0
    assert bare.read_text() == "# no markers\n"
    captured = capsys.readouterr()
    assert "## Measurements" in captured.out and "no <!-- results:start -->" in captured.err


def test_empty_results_say_so(tmp_path):
    assert "No results yet" in report.build_section(tmp_path)


def test_merged_grid_names_its_parts(tmp_path):
    parts = [{"git_sha": "aaaaaaaaaaaa1"}, {"git_sha": "bbbbbbbbbbbb2"}]
    data = {"meta": {"git_sha": "aaaaaaaaaaaa1", "merged_from": parts}, "rows": [{"layer_type": "bmojo"}]}
    (tmp_path / "mqar_long_cpu.json").write_text(json.dumps(data))
    text = "\n".join(report.section_for("mqar_long", "MQAR longer", ("",), tmp_path))
    assert "`mqar_long_cpu.json`, CPU-sized run" in text
    assert "cells merged from 2 runs (commits aaaaaaaaaa, bbbbbbbbbb)" in text
