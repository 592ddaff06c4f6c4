"""Checks ONNX models written by accnn with the onnx checker and onnxruntime.

Run by `cargo xtask onnx-check`, which writes a manifest (JSON):
  {"cases": [{"model": PATH, "input": F32 FILE, "shape": [..], "expected": F32 FILE,
              "reference": PATH or null, "tolerance": FLOAT, "check": BOOL (default true),
              "atol": FLOAT (default 0)}],
   "bench": [{"name": STR, "original": PATH, "accelerated": PATH, "shape": [..]}],
   "bench_results": PATH (optional: the bench medians in ms, as JSON)}
For each case: onnx.checker (full check, with shape inference) passes (unless "check" is false), onnxruntime runs the model,
its output matches accnn's engine output `expected` (relative error < tolerance, or every value
within `atol`: outputs that are all near zero, such as an empty detection map, have no meaningful
relative error), and, with a
`reference` model, matches that model's onnxruntime output too. Bench entries time both models in
onnxruntime, alternating, and print medians. Exit status 1 if any case fails.
"""

import json
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run(path, x):
    s = session(path)
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def relative_error(a, b):
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main():
    manifest = json.load(open(sys.argv[1]))
    failures = 0
    for case in manifest["cases"]:
        path = case["model"]
        try:
            if case.get("check", True):
                onnx.checker.check_model(onnx.load(path), full_check=True)
        except Exception as e:  # noqa: BLE001 - report and go on to the next model
            print(f"FAIL {path}: onnx.checker: {e}")
            failures += 1
            continue
        x = np.fromfile(case["input"], dtype=np.float32).reshape(case["shape"])
        expected = np.fromfile(case["expected"], dtype=np.float32)
        try:
            got = run(path, x)
        except Exception as e:  # noqa: BLE001 - report and go on to the next model
            print(f"FAIL {path}: onnxruntime cannot run it: {e}")
            failures += 1
            continue
        err = relative_error(got, expected)
        worst = float(np.abs(got.astype(np.float64).ravel() - expected).max(initial=0.0))
        ok = err < case["tolerance"] or worst <= case.get("atol", 0.0)
        line = (f"{'ok  ' if ok else 'FAIL'} {path}: onnxruntime vs accnn engine, relative error {err:.2e}"
                f" (largest difference {worst:.1e})")
        if case.get("reference"):
            ref_err = relative_error(got, run(case["reference"], x))
            line += f"; vs the original in onnxruntime {ref_err:.2e}"
            if case.get("reference_tolerance") is not None and ref_err >= case["reference_tolerance"]:
                ok = False
                line = "FAIL" + line[4:]
        print(line)
        failures += 0 if ok else 1
    timed = []
    for bench in manifest.get("bench", []):
        x = np.random.default_rng(0).standard_normal(bench["shape"], dtype=np.float32)
        # One session at a time: onnxruntime's workers spin after each run, so a second session
        # alternating with the first would find the cores busy (measured: twice the latency).
        medians = []
        for path in (bench["original"], bench["accelerated"]):
            s = session(path)
            feed = {s.get_inputs()[0].name: x}
            for _ in range(3):
                s.run(None, feed)
            times = []
            for _ in range(bench.get("rounds", 20)):
                t = time.perf_counter()
                s.run(None, feed)
                times.append(time.perf_counter() - t)
            medians.append(statistics.median(times))
            del s
        a, b = medians
        timed.append({"name": bench["name"], "original_ms": a * 1e3, "accelerated_ms": b * 1e3})
        print(
            f"onnxruntime {bench['name']}: original {a * 1e3:.2f} ms, accelerated {b * 1e3:.2f} ms, "
            f"speed-up {a / b:.2f}x (medians of {bench.get('rounds', 20)} runs each, one session at a time)"
        )
    if manifest.get("bench_results"):
        with open(manifest["bench_results"], "w") as f:
            json.dump(timed, f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
