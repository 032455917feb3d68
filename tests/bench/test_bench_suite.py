"""The benchmark suite (bench/): report building and cold-start measurement; one end-to-end run (slow)."""

from __future__ import annotations

import json
import sys

import pytest

from bench import coldstart, report


def _case(runtime, batch, length, median, mode="sequence"):
    return {"runtime": runtime, "batch": batch, "length": length, "mode": mode, "median_s": median,
            "p99_s": median * 2, "skipped": ""}


def _result(name="toy"):
    cases = []
    for length, torch_s in ((1, 100e-6), (100, 400e-6)):
        cases += [_case("pytorch", 1, length, torch_s), _case("edgeseq float", 1, length, torch_s / 2),
                  _case("edgeseq int8", 1, length, torch_s / 5), _case("openvino", 1, length, torch_s / 3)]
    cases += [_case("pytorch", 64, 100, 8e-3), _case("edgeseq int8", 64, 100, 5e-3), _case("openvino", 64, 100, 4e-3)]
    cases += [_case("pytorch", 1, 1, 100e-6, "step"), _case("edgeseq float", 1, 1, 10e-6, "step")]
    return {"model": name, "task": "toy", "threads": 1, "natural_length": 100, "cases": cases,
            "coldstart": {"edgeseq float": {"wall_s": 0.3, "peak_rss_mib": 60.0}}, "checkpoint_bytes": 1000,
            "files": {"float": {"path": "x", "bytes": 2048}}, "macs": {}, "peaks": {}, "agreement": {}, "skipped": {}}


def test_targets_are_judged_from_the_cases():
    t = report.model_targets(_result())
    assert t["b1_100_best"] == pytest.approx(5.0) and t["b1_100_best_runtime"] == "edgeseq int8"
    assert t["b1_100_float"] == pytest.approx(2.0)
    assert t["step"] == pytest.approx(10.0)
    assert t["b64"] == pytest.approx(1.6)
    assert t["vs_openvino_cases"] == "2/3" and t["behind_openvino"] == ["sequence b64x100 (0.80x of openvino)"]
    summary = report.summarize([_result()], {"cpu": "test"}, 1, 1.0, quick=True)
    assert summary["met"]["toy"] == {"b1_100_best": True, "b1_100_float": True, "step": False, "b64": False,
                                     "cold_wall": True, "cold_rss": True, "vs_openvino": False}


def test_markdown_and_plots(tmp_path):
    results = [_result("a"), _result("b")]
    summary = report.summarize(results, {"cpu": "test", "cores": 2}, 1, 1.0, quick=False)
    md = report.markdown(summary, results)
    assert "| a | 5.00x ✓ (int8)" in md and "![latency vs sequence length](latency_vs_length.png)" in md
    paths = report.plots(results, tmp_path)
    assert [p.name for p in paths] == ["latency_vs_length.png", "speedup.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_readme_section_replaces_only_the_marked_block(tmp_path):
    summary = report.summarize([_result("a")], {"cpu": "test", "cores": 2}, 1, 1.0, quick=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold table\n{report.README_END}\noutro\n")
    assert report.update_readme(readme, summary)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{report.README_END}\noutro\n")
    assert "old table" not in text and "| a | 5.00x ✓ (int8)" in text
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not report.update_readme(plain, summary) and plain.read_text() == "no markers\n"


def test_cold_start_counts_only_the_child(tmp_path):
    ballast = bytearray(300 * 1024 * 1024)  # this process is large; the child must not inherit that in its RSS
    wall, rss, code = coldstart.run_once([sys.executable, "-c", "pass"])
    assert code == 0 and wall > 0 and rss < 100, rss
    with pytest.raises(RuntimeError, match="boom"):
        coldstart.run_once([sys.executable, "-c", "import sys; sys.exit('boom')"])
    del ballast


@pytest.mark.slow
def test_suite_quick_run_on_one_model(tmp_path):
    from bench import suite

    assert suite.main(["--quick", "--models", "motion_lstm", "--budget", "0.05", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "motion_lstm.json").read_text())
    runtimes = {c["runtime"] for c in res["cases"] if c.get("median_s")}
    assert {"pytorch", "edgeseq float", "edgeseq int8", "onnxruntime-default"} <= runtimes
    assert any(c["mode"] == "step" and c.get("median_s") for c in res["cases"])
    assert res["coldstart"]["edgeseq float"]["peak_rss_mib"] > 0
    assert (tmp_path / "summary.md").read_text().startswith("# edgeseq benchmark results")
    assert (tmp_path / "speedup.png").exists()
