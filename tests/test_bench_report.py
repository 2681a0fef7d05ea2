"""bench/run_all.py's report: every number of a record reaches a table row, lists included."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_headline_rows_cover_nested_dicts_and_lists_of_results():
    run_all = _run_all()
    record = {"bench": "x", "machine": {"python": "3.12"}, "ratio": 80.5,
              "forward": [{"batch": 1000, "value_per_eval_us": 0.4}, {"batch": 100000, "value_per_eval_us": 0.05}],
              "runs": [{"wall_s": 3.0}], "photometry_ujy": [1.0, 2.0], "flag": True,
              "summary": {"coverage_68": 0.76, "per_band": [0.1, 0.2]}}
    rows = run_all.headline(record)
    assert rows == {"ratio": 80.5, "forward[batch=1000].value_per_eval_us": 0.4,
                    "forward[batch=100000].value_per_eval_us": 0.05, "runs[0].wall_s": 3.0,
                    "summary.coverage_68": 0.76}
    per_mock = {"mocks": [{"rhat": 1.0}] * (run_all._MAX_LIST_ROWS + 1), "summary": {"rhat_max": 1.0}}
    assert run_all.headline(per_mock) == {"summary.rhat_max": 1.0}
    text = run_all.render({"x": record}, {})
    assert "| forward[batch=100000].value_per_eval_us | 0.05 |" in text


def test_records_only_leaves_out_this_machines_runs(tmp_path, monkeypatch):
    run_all = _run_all()
    records, out = tmp_path / "records", tmp_path / "out"
    records.mkdir()
    out.mkdir()
    (records / "a.json").write_text(json.dumps({"v": 1}))
    (out / "a.json").write_text(json.dumps({"v": 2}))
    (out / "b.json").write_text("{not json")
    monkeypatch.setattr(run_all, "RECORDS_DIR", records)
    monkeypatch.setattr(run_all, "OUT_DIR", out)
    assert run_all.collect(records_only=True) == {"a": {"v": 1}}
    both = run_all.collect()
    assert both["a"] == {"v": 2} and "unreadable JSON" in both["b"]["error"]
