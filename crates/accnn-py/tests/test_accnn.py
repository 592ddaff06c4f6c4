"""The Python package as a user installs it (`pip install .`), checked against independent references:
onnxruntime runs what accnn writes, the cargo-built `accnn` command gives the same messages and output,
numbers are recomputed from the models' outputs.

ACCNN_CARGO_BIN names the cargo-built binary (CI sets it); without it the comparisons with the binary
are skipped, said so by pytest.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import accnn

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "fixtures"
VGG_ONNX = FIXTURES / "vgg16-fmnist.onnx"
RESNET_ONNX = FIXTURES / "resnet14-fmnist.onnx"
VGG_MXNET = FIXTURES / "vgg16-mini"
TRAIN = FIXTURES / "fashion-mnist-train-512"
TEST = FIXTURES / "fashion-mnist-1k"
MEAN, STD, PAD = 0.286, 0.353, 2

# Data-free decomposition of these converged fixtures changes their outputs a lot, and accelerate()
# warns so (checked in test_a_changed_model_is_warned_about).
pytestmark = pytest.mark.filterwarnings("ignore:the model's outputs changed:RuntimeWarning")


def idx_images(directory: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST IDX files read and preprocessed here, independently of accnn's reader."""
    with gzip.open(directory / f"{split}-images-idx3-ubyte.gz") as f:
        raw = f.read()
    count, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, 1, rows, cols)
    with gzip.open(directory / f"{split}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8).astype(np.int64)
    if limit is not None:
        pixels, labels = pixels[:limit], labels[:limit]
    # A black border, then (pixel / 255 - mean) / std.
    pixels = np.pad(pixels, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    x = (pixels.astype(np.float32) / 255.0 - MEAN) / STD
    return x.astype(np.float32), labels


def ort_outputs(model, x: np.ndarray) -> np.ndarray:
    """The first output of `model` (a path, bytes or ModelProto) in onnxruntime."""
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    if isinstance(model, Path):
        model = str(model)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})[0]


def cargo_bin() -> str:
    path = os.environ.get("ACCNN_CARGO_BIN")
    if not path:
        pytest.skip("ACCNN_CARGO_BIN (the cargo-built accnn) is not set")
    return path


def wheel_bin() -> str:
    path = shutil.which("accnn", path=str(Path(sys.executable).parent))
    assert path, "the wheel installs an `accnn` command beside the interpreter"
    return path


@pytest.fixture(scope="module")
def test_images():
    return idx_images(TEST, "t10k", limit=64)


# ---------------------------------------------------------------------------------------------------
# accelerate: path, bytes and ModelProto in; the same kind out


def test_path_in_path_out_runs_in_onnxruntime_like_the_engine(tmp_path, test_images):
    dest = tmp_path / "fast.onnx"
    fast, report = accnn.accelerate(VGG_ONNX, ratio=2.0, save_model=dest, progress=False)
    assert fast == dest and isinstance(fast, Path) and dest.is_file()
    assert report.written == (str(dest),)
    # The report's totals are the sums of its layers, and the ratio was met.
    assert report.macs_before == sum(layer.macs_before for layer in report.layers)
    assert report.macs_after == sum(layer.macs_after for layer in report.layers)
    assert report.speedup == pytest.approx(report.macs_before / report.macs_after)
    assert report.speedup >= 1.99
    # The config names exactly the decomposed layers with their ranks.
    decomposed = {layer.name: layer.rank for layer in report.layers if layer.decomposed}
    assert decomposed, "a 2x plan decomposes some layer"
    assert {**report.config["conv_params"], **report.config["fc_params"]} == decomposed
    x, _ = test_images
    in_ort = ort_outputs(dest, x[:16])
    in_engine = accnn.run(dest, x[:16])[0]
    np.testing.assert_allclose(in_engine.reshape(in_ort.shape), in_ort, rtol=1e-3, atol=1e-4)
    # ... and the decomposition changed the model (the outputs differ from the original's).
    assert not np.allclose(ort_outputs(VGG_ONNX, x[:16]), in_ort, atol=1e-3)


def test_default_destination_is_beside_the_input_and_never_the_input(tmp_path):
    model = tmp_path / "net.onnx"
    shutil.copy(VGG_ONNX, model)
    before = model.read_bytes()
    fast, _ = accnn.accelerate(str(model), ratio=1.5)
    assert fast == str(tmp_path / "net-accnn.onnx") and isinstance(fast, str)
    assert Path(fast).is_file()
    assert model.read_bytes() == before


def test_bytes_and_model_proto_give_what_the_file_gives(tmp_path, test_images):
    dest = tmp_path / "from-file.onnx"
    accnn.accelerate(VGG_ONNX, ratio=3.0, save_model=dest)
    new_bytes, report_b = accnn.accelerate(VGG_ONNX.read_bytes(), ratio=3.0)
    assert isinstance(new_bytes, bytes)
    proto, report_p = accnn.accelerate(onnx.load(str(VGG_ONNX)), ratio=3.0)
    assert isinstance(proto, onnx.ModelProto)
    onnx.checker.check_model(proto, full_check=True)
    assert report_b.config == report_p.config
    x, _ = test_images
    from_file = ort_outputs(dest, x)
    np.testing.assert_allclose(ort_outputs(new_bytes, x), from_file, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ort_outputs(proto, x), from_file, rtol=1e-5, atol=1e-6)
    # Bytes in, nothing written unless asked.
    assert report_b.written == ()


def test_mxnet_prefix_in_prefix_out(tmp_path, test_images):
    prefix = tmp_path / "mini-x2"
    fast, report = accnn.accelerate(str(VGG_MXNET), ratio=2.0, save_model=str(prefix))
    assert fast == str(prefix)
    assert (tmp_path / "mini-x2-symbol.json").is_file() and (tmp_path / "mini-x2-0001.params").is_file()
    assert report.speedup >= 1.99
    # A model read from MXNet has no ONNX original to come back as bytes.
    with pytest.raises(accnn.AccnnError):
        accnn.accelerate(str(VGG_MXNET), ratio=2.0, save_model=str(tmp_path / "x.onnx"))


def test_an_mxnet_checkpoint_leaves_as_onnx(tmp_path, test_images):
    prefix = tmp_path / "mini-x2"
    accnn.accelerate(str(VGG_MXNET), ratio=2.0, save_model=str(prefix), progress=False)
    dest = tmp_path / "mini-x2.onnx"
    fast, report = accnn.accelerate(str(VGG_MXNET), ratio=2.0, save_model=dest, save_format="onnx", progress=False)
    assert fast == str(dest) and report.written[0] == str(dest)
    assert not (tmp_path / "mini-x2.onnx-symbol.json").exists()
    # The same decomposition: onnxruntime on the ONNX file, accnn's engine on the MXNet checkpoint.
    x, _ = test_images
    engine = accnn.run(str(prefix), x)[0]
    np.testing.assert_allclose(ort_outputs(dest, x), engine, rtol=1e-4, atol=1e-4)
    # The default destination follows the format asked for.
    copy = tmp_path / "mini"
    for suffix in ("-symbol.json", "-0001.params"):
        (tmp_path / f"mini{suffix}").write_bytes(Path(f"{VGG_MXNET}{suffix}").read_bytes())
    fast, _ = accnn.accelerate(str(copy), ratio=2.0, save_format="onnx", progress=False)
    assert fast == str(copy) + "-accnn.onnx" and Path(fast).is_file()
    with pytest.raises(accnn.AccnnError, match="save_format 'tflite'"):
        accnn.accelerate(str(VGG_MXNET), ratio=2.0, save_model=str(tmp_path / "y"), save_format="tflite")


def test_config_dict_reproduces_the_chosen_model(tmp_path, test_images):
    first, report = accnn.accelerate(VGG_ONNX.read_bytes(), ratio=2.5)
    again, report_again = accnn.accelerate(VGG_ONNX.read_bytes(), config=report.config)
    assert report_again.config == report.config
    assert report_again.chosen_by == "the given config"
    x, _ = test_images
    np.testing.assert_allclose(ort_outputs(again, x), ort_outputs(first, x), rtol=1e-5, atol=1e-6)
    config_file = tmp_path / "config.json"
    import json

    config_file.write_text(json.dumps(report.config))
    _, from_file = accnn.accelerate(VGG_ONNX.read_bytes(), config=config_file)
    assert from_file.config == report.config


def test_full_rank_config_reproduces_the_original(test_images):
    """Every layer at its largest rank: the decomposition must compute what the original computes."""
    info = accnn.inspect(RESNET_ONNX)
    config = {"conv_params": {}, "fc_params": {}}
    for layer in info.layers:
        if layer.kind == "conv" and layer.weight_shape[2:] != (1, 1):
            config["conv_params"][layer.name] = layer.max_rank
    assert config["conv_params"]
    full, report = accnn.accelerate(RESNET_ONNX.read_bytes(), config=config)
    assert all(layer.energy == pytest.approx(1.0, abs=1e-6) for layer in report.layers)
    x, _ = test_images
    np.testing.assert_allclose(ort_outputs(full, x), ort_outputs(RESNET_ONNX, x), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------------
# Calibration with numpy arrays


def test_calibrating_with_an_array_is_calibrating_with_the_files():
    x, _ = idx_images(TRAIN, "train", limit=128)
    from_array, report_a = accnn.accelerate(VGG_ONNX.read_bytes(), ratio=3.0, calibrate=x)
    from_files, report_f = accnn.accelerate(
        VGG_ONNX.read_bytes(), ratio=3.0, calibrate=TRAIN, calib_samples=128, mean=MEAN, std=STD, pad=PAD
    )
    assert report_a.calibration_images == 128
    assert report_a.config == report_f.config
    refitted = 0
    for a, f in zip(report_a.layers, report_f.layers):
        assert (a.refit, a.rank) == (f.refit, f.rank)
        if f.fit_error_after is not None:
            assert a.fit_error_after == pytest.approx(f.fit_error_after, rel=1e-6, abs=1e-9)
            refitted += 1
    assert refitted > 0
    test_x, _ = idx_images(TEST, "t10k", limit=32)
    np.testing.assert_allclose(ort_outputs(from_array, test_x), ort_outputs(from_files, test_x), rtol=1e-4, atol=1e-5)


def test_bias_correction_keeps_accuracy_without_data():
    x, y = idx_images(TEST, "t10k", limit=500)
    corrected, report = accnn.accelerate(VGG_ONNX.read_bytes(), ratio=3.0)
    plain, plain_report = accnn.accelerate(VGG_ONNX.read_bytes(), ratio=3.0, bias_correction=False)
    bias_only, bias_report = accnn.accelerate(VGG_ONNX.read_bytes(), ratio=3.0, gain_restoration=False)
    decomposed = [layer for layer in report.layers if layer.decomposed]
    assert report.bias_corrected == len(decomposed) > 0
    assert plain_report.bias_corrected is None
    # The VGG is a chain: every decomposed convolution is on the main path.
    assert report.gain_restored == len([layer for layer in decomposed if layer.kind == "conv"]) > 0
    assert bias_report.gain_restored == 0 and bias_report.bias_corrected == report.bias_corrected
    assert [layer.rank for layer in plain_report.layers] == [layer.rank for layer in report.layers]
    # Accuracy recomputed here from onnxruntime's outputs (the CLI's eval on the full test set: 85.3%
    # with the gain restored, 66.1% with the bias alone, 36.5% uncorrected).
    top1 = lambda model: float((ort_outputs(model, x).argmax(1) == y).mean())  # noqa: E731
    assert top1(bias_only) > top1(plain) + 0.15
    assert top1(corrected) > top1(bias_only) + 0.10


def test_calibration_keeps_more_accuracy_than_weights_alone():
    calib, _ = idx_images(TRAIN, "train", limit=256)
    x, y = idx_images(TEST, "t10k", limit=500)
    data_free, _ = accnn.accelerate(VGG_ONNX.read_bytes(), ratio=3.0)
    calibrated, report = accnn.accelerate(VGG_ONNX.read_bytes(), ratio=3.0, calibrate=calib)
    fits = [layer for layer in report.layers if layer.refit]
    assert fits and all(layer.fit_error_after <= layer.fit_error_before + 1e-9 for layer in fits)
    # Accuracy recomputed here from onnxruntime's outputs.
    top1 = lambda model: float((ort_outputs(model, x).argmax(1) == y).mean())  # noqa: E731
    assert top1(calibrated) > top1(data_free) + 0.05
    assert top1(calibrated) > 0.8


@pytest.mark.filterwarnings("error")
def test_a_changed_model_is_warned_about():
    with pytest.warns(RuntimeWarning, match=r"outputs changed by \d+% \(relative\); to keep them, fit the factors"):
        accnn.accelerate(VGG_ONNX.read_bytes(), ratio=3.0)
    # Near full rank nothing changes, and nothing is said (any warning fails this test).
    accnn.accelerate(VGG_ONNX.read_bytes(), ratio=1.01)


def test_bad_calibration_array_is_refused():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        accnn.accelerate(VGG_ONNX.read_bytes(), ratio=2.0, calibrate=np.zeros((4, 32, 32), np.float32))


# ---------------------------------------------------------------------------------------------------
# inspect, run, evaluate, benchmark


def test_inspect_counts_what_the_layers_hold():
    info = accnn.inspect(VGG_ONNX)
    proto = onnx.load(str(VGG_ONNX))
    weights = {t.name: np.prod(t.dims) for t in proto.graph.initializer}
    # Parameters: the ONNX file's initializers, counted here.
    assert info.params == int(sum(weights.values()))
    conv = [layer for layer in info.layers if layer.kind == "conv"]
    assert len(conv) == 13 and info.data_shape == (1, 1, 32, 32)
    # MACs of the first convolution: output pixels x output channels x (C x kh x kw).
    first = conv[0]
    n, c, kh, kw = first.weight_shape
    assert first.macs == 32 * 32 * n * c * kh * kw
    assert first.max_rank == min(c * kh, n * kw)
    assert str(info).startswith(f"model {VGG_ONNX}")


def test_evaluate_is_the_accuracy_of_the_outputs(test_images):
    x, y = idx_images(TEST, "t10k", limit=300)
    result = accnn.evaluate(VGG_ONNX, x, y, reference=VGG_ONNX)
    logits = ort_outputs(VGG_ONNX, x)
    assert result.images == 300
    assert result.top1 == pytest.approx(float((logits.argmax(1) == y).mean()))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert result.top5 == pytest.approx(float((top5 == y[:, None]).any(1).mean()))
    assert result.agreement == 1.0 and result.reference_top1 == result.top1
    # The same images read from the files by accnn.
    from_files = accnn.evaluate(VGG_ONNX, TEST, limit=300, mean=MEAN, std=STD, pad=PAD)
    assert from_files.top1 == pytest.approx(result.top1)


def test_benchmark_times_both_models(tmp_path):
    fast, report = accnn.accelerate(VGG_ONNX, ratio=2.0, save_model=tmp_path / "fast.onnx")
    result = accnn.benchmark(VGG_ONNX, fast, batch=[1, 4], rounds=3, warmup=1, threads=1)
    assert [row.batch for row in result.results] == [1, 4]
    assert result.theoretical_speedup == pytest.approx(report.speedup, rel=1e-6)
    for row in result.results:
        assert row.a_ms > 0 and row.b_ms > 0
        assert row.speedup == pytest.approx(row.a_ms / row.b_ms)
        assert row.a_iqr_ms[0] <= row.a_ms <= row.a_iqr_ms[1]
    assert "theoretical speed-up" in str(result)


# ---------------------------------------------------------------------------------------------------
# Errors: the command's messages, as exceptions


def test_a_bad_model_raises_with_the_commands_message(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(accnn.AccnnError) as raised:
        accnn.accelerate(bad, ratio=2.0, save_model=tmp_path / "out.onnx")
    message = str(raised.value)
    assert "broken.onnx" in message and "\n" not in message
    assert not (tmp_path / "out.onnx").exists()
    args = ["-m", str(bad), "--ratio", "2", "--save-model", str(tmp_path / "out.onnx")]
    for command in (wheel_bin(), cargo_bin()):
        done = subprocess.run([command, *args], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 1
        assert done.stderr.strip() == f"error: {message}"


def test_flag_errors_name_the_option(tmp_path):
    with pytest.raises(accnn.AccnnError, match="--ratio must be a number of at least 1"):
        accnn.accelerate(VGG_ONNX.read_bytes(), ratio=0.5)
    with pytest.raises(accnn.AccnnError, match="would overwrite the input file"):
        accnn.accelerate(VGG_ONNX, ratio=2.0, save_model=VGG_ONNX)
    with pytest.raises(TypeError, match="a model is a path"):
        accnn.accelerate(42, ratio=2.0)


def test_latency_in_onnxruntime_names_the_library_it_cannot_load(tmp_path):
    missing = tmp_path / "libonnxruntime.so"
    with pytest.raises(accnn.AccnnError, match=f"^--runtime onnxruntime: cannot load onnxruntime from {missing}: no such file$"):
        accnn.accelerate(VGG_ONNX.read_bytes(), ratio=1.2, cost="latency", runtime="onnxruntime", ort_library=missing)
    with pytest.raises(accnn.AccnnError, match="runtime 'tpu'"):
        accnn.accelerate(VGG_ONNX.read_bytes(), ratio=1.2, cost="latency", runtime="tpu")


# ---------------------------------------------------------------------------------------------------
# The command from the wheel is the cargo-built one


def _same_output(args: list[str], tmp_path: Path) -> None:
    outputs = []
    for i, command in enumerate((wheel_bin(), cargo_bin())):
        cwd = tmp_path / str(i)
        cwd.mkdir(parents=True)
        done = subprocess.run([command, *args], capture_output=True, text=True, cwd=cwd)
        # Timings differ from run to run; everything else must not.
        lines = [line for line in done.stdout.splitlines() if " took " not in line]
        outputs.append((done.returncode, lines, done.stderr))
        assert done.returncode == 0, done.stderr
    assert outputs[0] == outputs[1]


def test_the_wheels_command_is_the_cargo_built_one(tmp_path):
    _same_output(["inspect", "-m", str(VGG_MXNET)], tmp_path / "inspect")
    _same_output(["--version"], tmp_path / "version")
    _same_output(["--help"], tmp_path / "help")
    _same_output(
        ["-m", str(VGG_ONNX), "--ratio", "2", "--save-model", "x2.onnx", "--config-out", "x2.json"],
        tmp_path / "main",
    )
    written = [(tmp_path / "main" / d / "x2.onnx").read_bytes() for d in ("0", "1")]
    assert written[0] == written[1]


def test_python_m_accnn_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "accnn", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"accnn {accnn.__version__}"


# ---------------------------------------------------------------------------------------------------
# Progress: lines through sys.stderr when asked for (a notebook shows those), else nothing off a terminal


def test_progress_is_written_to_sys_stderr_only_when_asked(capsys):
    x, y = idx_images(TEST, "t10k", limit=100)
    accnn.accelerate(VGG_ONNX.read_bytes(), ratio=2.0)
    accnn.evaluate(VGG_ONNX, x, y)
    assert capsys.readouterr().err == ""
    accnn.accelerate(VGG_ONNX.read_bytes(), ratio=2.0, progress=True)
    svd = [line for line in capsys.readouterr().err.splitlines() if line.startswith("SVD ")]
    total = len(accnn.inspect(VGG_ONNX).layers)
    # Layers are factorised concurrently: each line counts the layers finished, the first one included.
    assert 2 <= len(svd) <= 11 and svd[0].startswith(f"SVD 1/{total} ")
    accnn.evaluate(VGG_ONNX, x, y, batch=10, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == f"{VGG_ONNX}: 100/100 images"


# ---------------------------------------------------------------------------------------------------
# The GIL is released while accnn works


def test_other_threads_run_while_accelerate_works():
    calib, _ = idx_images(TRAIN, "train", limit=256)
    stamps: list[float] = []
    span: list[float] = []

    def work():
        start = time.perf_counter()
        accnn.accelerate(RESNET_ONNX.read_bytes(), ratio=2.0, calibrate=calib)
        span.extend([start, time.perf_counter()])

    thread = threading.Thread(target=work)
    thread.start()
    while thread.is_alive():
        stamps.append(time.perf_counter())
        time.sleep(0.001)
    thread.join()
    start, end = span
    inside = [t for t in stamps if start <= t <= end]
    gaps = np.diff([start, *inside, end])
    # Holding the GIL, the native call would stop this loop for its whole length.
    assert end - start > 0.2, "the job is long enough to tell"
    assert gaps.max() < 0.5 * (end - start)


def test_importing_quiets_candles_workers_in_a_fresh_process():
    # A child interpreter, so that what this test process inherited does not decide it.
    env = {k: v for k, v in os.environ.items() if k != "CANDLE_BARRIER_POOL_SPIN_LIMIT"}
    code = "import accnn, os; print(os.environ['CANDLE_BARRIER_POOL_SPIN_LIMIT'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == accnn._accnn.CANDLE_SPIN[1]
    # A value the user set is kept.
    env["CANDLE_BARRIER_POOL_SPIN_LIMIT"] = "7"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "7"
