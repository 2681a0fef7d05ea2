"""Run every bench script, gather their JSON into bench/results.json, render docs/benchmarks.md.

Each script writes ``bench/out/<name>.json`` (see ``_common.write_json``); this
runner calls them one after the other in fresh processes (so compile times are
cold where a script measures them), then collects whatever JSON each produced —
including results of scripts run earlier on other machines (e.g. a GPU) that
are already in ``bench/out`` — into one file and one Markdown report: machine,
versions, date, the headline figures of each bench and its ratios against the
BAGPIPES baseline where the script measured one in the same run.

    .venv/bin/python bench/run_all.py [--only forward_model,catalog] [--skip compile]
                                      [--extra-args forward_model=--no-bagpipes]
                                      [--report-only] [--records-only]

``--report-only`` renders the report from the JSON already in bench/out and
bench/records; ``--records-only`` leaves out bench/out (the committed report is
rendered with ``--report-only --records-only``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
# committed results of runs made elsewhere (e.g. on a lent GPU), which bench/out (ignored) cannot hold
RECORDS_DIR = BENCH_DIR / "records"
RESULTS = BENCH_DIR / "results.json"
REPORT = BENCH_DIR.parent / "docs" / "benchmarks.md"

# script → what its headline is and where the target comes from
SCRIPTS = {
    "forward_model": "photometry per evaluation (single, vmapped ×1000, gradient) vs bagpipes; target ≥ 100× batched",
    "single_galaxy": "NUTS on a 12-band mock: compile, sampling, min ESS/s; --bagpipes gives the wall-time ratio",
    "nuts_metric": "NUTS's metric (dense/diagonal, Laplace/identity seed, target 0.8/0.9/0.95) on 32 prior-drawn mocks",
    "likelihood_speed": "likelihood gradient through band tables vs the component chain",
    "sfh_likelihood": "likelihood cost per SFH family (delayed, continuity, stochastic)",
    "compile": "cold vs warm-disk compile of each engine in a fresh process",
    "methods_gaussian": "every method on a 5-D correlated Gaussian (known answer)",
    "methods": "every method on an SED mock against a NUTS reference",
    "raytrace_noisy_gradients": "Ray Tracing vs HMC with noisy gradients",
    "catalog": "616 GOODS-S galaxies: MAP/Laplace/NUTS throughput, Dask",
    "population": "hierarchical PSD inference: recovery and wall time vs number of galaxies",
}


def run_script(name: str, extra: list[str], timeout_s: float) -> dict:
    script = BENCH_DIR / f"{name}.py"
    if not script.exists():
        return {"status": "missing"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(script), *extra], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall_s": time.perf_counter() - start}
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    out = {"status": status, "wall_s": time.perf_counter() - start}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-2000:]
    return out


def collect(records_only: bool = False) -> dict:
    """Every bench/records/*.json and (unless ``records_only``) bench/out/*.json, keyed by
    file stem (out wins)."""
    results = {}
    paths = sorted(RECORDS_DIR.glob("*.json")) + ([] if records_only else sorted(OUT_DIR.glob("*.json")))
    for path in paths:
        try:
            results[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            results[path.stem] = {"error": f"unreadable JSON: {err}"}
    return results


# keys that name an entry of a list of results (e.g. one per batch size), in order of preference
_LABEL_KEYS = ("batch", "n_galaxies", "method", "name")
# longer lists are per-item detail (e.g. one entry per mock galaxy): left to the JSON
_MAX_LIST_ROWS = 8


def _flatten(prefix: str, value, out: dict, depth: int = 0) -> None:
    if isinstance(value, dict) and depth < 3:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out, depth + 1)
    elif (isinstance(value, list) and depth < 3 and 0 < len(value) <= _MAX_LIST_ROWS
          and all(isinstance(v, dict) for v in value)):
        for i, entry in enumerate(value):
            key = next((k for k in _LABEL_KEYS if k in entry), None)
            label = str(i) if key is None else f"{key}={entry[key]}"
            rest = {k: v for k, v in entry.items() if k != key}
            _flatten(f"{prefix}[{label}]", rest, out, depth + 1)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = value


def _fmt(x: float) -> str:
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}"
    return f"{x:.3e}"


def headline(result: dict) -> dict[str, float]:
    """Numbers worth a table row: ratios, targets' figures, timings; not raw arrays."""
    skip = ("machine", "bench", "settings", "photometry_ujy")
    flat: dict[str, float] = {}
    for key, value in result.items():
        if key not in skip:
            _flatten(key, value, flat)
    return flat


def render(results: dict, runs: dict) -> str:
    lines = ["# Benchmarks", "",
             "Generated by `bench/run_all.py` from the JSON files in `bench/records/` (committed runs, some on "
             "other machines) and, unless `--records-only`, `bench/out/`. Every figure below "
             "comes from a script in `bench/` that anyone can rerun; ratios against BAGPIPES are "
             "measured in the same run as the tengri figure. Timings on a shared machine are upper "
             "bounds.", ""]
    for name, result in results.items():
        machine = result.get("machine", {})
        lines += [f"## {name}", ""]
        script = next((s for s in sorted(SCRIPTS, key=len, reverse=True) if name.startswith(s)), None)
        if script:
            lines += [f"*`bench/{script}.py`: {SCRIPTS[script]}*", ""]
        lines.append(f"- machine: {machine.get('platform', '?')}, devices {machine.get('devices', '?')}, "
                     f"python {machine.get('python', '?')}, jax {machine.get('jax', '?')}, "
                     f"date {machine.get('date', '?')}")
        if name in runs:
            lines.append(f"- this run: {runs[name]['status']} in {runs[name].get('wall_s', 0):.0f} s")
        if isinstance(result.get("note"), str):
            lines.append(f"- note: {result['note']}")
        if "target" in result or "targets" in result:
            lines.append(f"- target: {result.get('target', result.get('targets'))}")
        lines += ["", "| quantity | value |", "| --- | --- |"]
        for key, value in headline(result).items():
            lines.append(f"| {key} | {_fmt(float(value))} |")
        lines.append("")
    missing = [n for n in SCRIPTS if not any(r.startswith(n) for r in results)]
    if missing:
        lines += ["## Not measured", "", "No JSON yet for: " + ", ".join(missing), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated script names")
    parser.add_argument("--skip", default="", help="comma-separated script names")
    parser.add_argument("--extra-args", action="append", default=[],
                        help="NAME=ARGS passed to one script, e.g. single_galaxy=--bagpipes")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--records-only", action="store_true",
                        help="report only the committed bench/records (not this machine's bench/out)")
    args = parser.parse_args(argv)

    names = [n for n in args.only.split(",") if n] or list(SCRIPTS)
    unknown = [n for n in names + [n for n in args.skip.split(",") if n] if n not in SCRIPTS]
    if unknown:
        parser.error(f"unknown bench script(s) {unknown}; known: {', '.join(SCRIPTS)}")
    extra: dict[str, list[str]] = {}
    for item in args.extra_args:
        name, _, rest = item.partition("=")
        if name not in SCRIPTS:
            parser.error(f"--extra-args names unknown script {name!r}")
        extra[name] = rest.split()
    runs = {}
    if not args.report_only:
        for name in names:
            if name in args.skip.split(","):
                continue
            print(f"[run_all] {name} …", flush=True)
            runs[name] = run_script(name, extra.get(name, []), args.timeout_s)
            print(f"[run_all] {name}: {runs[name]['status']} ({runs[name].get('wall_s', 0):.0f} s)", flush=True)
    results = collect(args.records_only)
    RESULTS.write_text(json.dumps({"runs": runs, "results": results}, indent=2, default=float))
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(render(results, runs))
    print(f"[run_all] wrote {RESULTS} and {REPORT}")
    return 0 if all(r["status"] == "ok" for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
