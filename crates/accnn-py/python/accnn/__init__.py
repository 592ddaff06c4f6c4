"""accnn: make a trained CNN faster and smaller by low-rank decomposition of its layers.

Each ``(N, C, kh, kw)`` convolution becomes a ``(K, C, kh, 1)`` convolution followed by an
``(N, K, 1, kw)`` one (Tai et al., arXiv 1511.06067), each fully-connected layer two thin ones, with
ranks ``K`` chosen for a speed-up ratio (Zhang et al., arXiv 1411.4229) or taken from a config.

>>> import accnn
>>> fast, report = accnn.accelerate("model.onnx", ratio=2.0)      # doctest: +SKIP
>>> print(report)                                                # doctest: +SKIP

Models are ONNX files, ONNX bytes, ``onnx.ModelProto`` objects or MXNet checkpoint prefixes; the new
model comes back as the same kind. The work runs in Rust with the GIL released; errors raise
:class:`AccnnError` with the message the ``accnn`` command prints.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import NDArray

from . import _accnn
from ._accnn import AccnnError, __version__

# Before any work starts candle's CPU workers (lazily, at its first parallel op): how long they spin
# after each elementwise op. Candle's default takes a core from the next layer or another runtime
# being timed; the value is `accnn_infer::CANDLE_SPIN_LIMIT`, which the `accnn` binary sets too.
os.environ.setdefault(*_accnn.CANDLE_SPIN)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    ModelLike = Union[str, "os.PathLike[str]", bytes, onnx.ModelProto]
else:
    ModelLike = Any

__all__ = [
    "AccnnError",
    "Benchmark",
    "BenchmarkRow",
    "Evaluation",
    "Fidelity",
    "Inspection",
    "Latency",
    "LayerInfo",
    "LayerReport",
    "Report",
    "__version__",
    "accelerate",
    "benchmark",
    "evaluate",
    "inspect",
    "run",
]

# Above this relative change of the outputs the command warns, and so does accelerate().
_FIDELITY_WARNING = 0.1


# ---------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class LayerReport:
    """What decomposition did to one convolution or fully-connected layer."""

    name: str
    #: ``"conv"`` or ``"fc"`` (the config.json section).
    kind: str
    #: The intermediate width ``K``; ``None`` when the layer stayed whole.
    rank: Optional[int]
    #: The largest ``K`` the layer can have.
    max_rank: int
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    #: Fraction of the weight's (or, calibrated, the response's) energy kept; 1 when whole.
    energy: float
    #: Calibrated runs: the layer's relative response error before and after its least-squares refit.
    fit_error_before: Optional[float]
    fit_error_after: Optional[float]
    refit: Optional[bool]

    @property
    def decomposed(self) -> bool:
        """Whether the layer was replaced by two thinner ones."""
        return self.rank is not None


@dataclass(frozen=True)
class Fidelity:
    """The new model's outputs against the original's on a few inputs."""

    inputs: int
    #: Whether the inputs were synthetic (standard normal) rather than calibration images.
    synthetic: bool
    #: ``||new - original|| / ||original||`` over the first output.
    relative_error: float
    #: Fraction of inputs whose best class is the same.
    top1_agreement: float


@dataclass(frozen=True)
class Latency:
    """``cost="latency"``: latencies in milliseconds at ``batch``, measured with accnn's engine."""

    batch: int
    original_ms: float
    predicted_ms: float
    measured_ms: float

    @property
    def speedup(self) -> float:
        return self.original_ms / self.measured_ms


@dataclass(frozen=True)
class Report:
    """What :func:`accelerate` did: every layer, the totals, the chosen ranks and checks.

    ``str(report)`` is the table the ``accnn`` command prints.
    """

    layers: Tuple[LayerReport, ...]
    #: Theoretical speed-up over all convolution and FC MACs, and over convolutions alone.
    speedup: float
    conv_speedup: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    #: What chose the ranks (an objective and budget, or the given config).
    chosen_by: Optional[str]
    #: Data-free fits: how many decomposed layers had their bias corrected (``None``: no correction,
    #: as with ``bias_correction=False`` or calibration).
    bias_corrected: Optional[int]
    #: Data-free fits: how many decomposed convolutions on the network's main path (every path to
    #: the output passes through them) had their lost gain restored (``None``: no correction).
    gain_restored: Optional[int]
    #: The chosen ranks in the original tool's config.json schema (``conv_params``, ``fc_params``).
    config: Dict[str, Any]
    #: ``(batch_norm, convolution)`` pairs folded before decomposing.
    folded: Tuple[Tuple[str, str], ...]
    #: Layers left whole because of operators accnn does not support, one line each.
    skipped: Tuple[str, ...]
    #: Weights holding NaN or infinite values, one line each.
    warnings: Tuple[str, ...]
    fidelity: Optional[Fidelity]
    #: Why the output check did not run, when it did not.
    fidelity_skipped: Optional[str]
    latency: Optional[Latency]
    #: How many calibration images were used (``None``: data-free).
    calibration_images: Optional[int]
    #: Seconds from the analysed model to the chosen plan.
    plan_seconds: float
    #: The files written.
    written: Tuple[str, ...]
    table: str

    def __str__(self) -> str:
        return self.table

    def layer(self, name: str) -> LayerReport:
        """The report of the layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> Dict[str, Any]:
        """The report as plain data (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def _from_native(cls, d: Dict[str, Any]) -> "Report":
        fidelity = d["fidelity"]
        latency = d["latency"]
        return cls(
            layers=tuple(LayerReport(**layer) for layer in d["layers"]),
            speedup=d["speedup"],
            conv_speedup=d["conv_speedup"],
            macs_before=d["macs_before"],
            macs_after=d["macs_after"],
            params_before=d["params_before"],
            params_after=d["params_after"],
            chosen_by=d["chosen_by"],
            bias_corrected=d["bias_corrected"],
            gain_restored=d["gain_restored"],
            config=json.loads(d["config_json"]),
            folded=tuple(tuple(f) for f in d["folded"]),
            skipped=tuple(d["skipped"]),
            warnings=tuple(d["warnings"]),
            fidelity=Fidelity(**fidelity) if fidelity is not None else None,
            fidelity_skipped=d["fidelity_skipped"],
            latency=Latency(**latency) if latency is not None else None,
            calibration_images=d["calibration_images"],
            plan_seconds=d["plan_seconds"],
            written=tuple(d["written"]),
            table=d["table"],
        )


@dataclass(frozen=True)
class LayerInfo:
    """One convolution or fully-connected layer as :func:`inspect` sees it."""

    name: str
    kind: str
    weight_shape: Tuple[int, ...]
    macs: int
    params: int
    max_rank: int


@dataclass(frozen=True)
class Inspection:
    """A model's layers and costs; ``str()`` is the table ``accnn inspect`` prints."""

    name: str
    #: The input shape analysed, batch first.
    data_shape: Tuple[int, ...]
    layers: Tuple[LayerInfo, ...]
    #: MACs of the convolution and FC layers for one input, and parameters of the whole model.
    macs: int
    params: int
    warnings: Tuple[str, ...]
    table: str

    def __str__(self) -> str:
        return self.table


@dataclass(frozen=True)
class Evaluation:
    """Accuracy of a model on labelled images (and agreement with a reference model)."""

    model: str
    images: int
    top1: float
    #: ``None`` when the model has fewer than five classes.
    top5: Optional[float]
    reference_top1: Optional[float]
    #: Fraction of images on which the model and the reference give the same best class.
    agreement: Optional[float]


@dataclass(frozen=True)
class BenchmarkRow:
    """Latencies of both models at one batch size: medians and interquartile ranges in ms."""

    batch: int
    a_ms: float
    a_iqr_ms: Tuple[float, float]
    b_ms: float
    b_iqr_ms: Tuple[float, float]
    #: ``a_ms / b_ms``: how much faster ``b`` runs.
    speedup: float


@dataclass(frozen=True)
class Benchmark:
    """Measured speed-up of model ``b`` over model ``a`` (runs alternate, one batch size a row)."""

    a: str
    b: str
    #: Convolution and FC MACs of ``a`` over those of ``b``.
    theoretical_speedup: float
    results: Tuple[BenchmarkRow, ...]

    def __str__(self) -> str:
        lines = [
            f"{self.a} vs {self.b}: theoretical speed-up {self.theoretical_speedup:.3f}x (conv + FC MACs)",
            f"{'batch':>6}  {'a ms (IQR)':>22}  {'b ms (IQR)':>22}  {'speed-up':>9}",
        ]
        for r in self.results:
            a = f"{r.a_ms:.2f} ({r.a_iqr_ms[0]:.2f}-{r.a_iqr_ms[1]:.2f})"
            b = f"{r.b_ms:.2f} ({r.b_iqr_ms[0]:.2f}-{r.b_iqr_ms[1]:.2f})"
            lines.append(f"{r.batch:>6}  {a:>22}  {b:>22}  {r.speedup:>8.3f}x")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Arguments


def _is_proto(model: Any) -> bool:
    return hasattr(model, "SerializeToString") and hasattr(model, "graph")


def _model_arg(model: Any, epoch: int = 1) -> Dict[str, Any]:
    """A model as the native functions take it: a path, or the bytes of an ONNX file."""
    if isinstance(model, (str, os.PathLike)):
        return {"path": os.fspath(model), "data": None, "epoch": epoch, "name": os.fspath(model)}
    if isinstance(model, (bytes, bytearray, memoryview)):
        return {"path": None, "data": bytes(model), "epoch": epoch, "name": "<bytes>"}
    if _is_proto(model):
        return {"path": None, "data": model.SerializeToString(), "epoch": epoch, "name": "<onnx.ModelProto>"}
    raise TypeError(
        f"a model is a path (ONNX file or MXNet prefix), ONNX bytes or an onnx.ModelProto, not {type(model).__name__}"
    )


def _array_arg(x: Any, what: str) -> Dict[str, Any]:
    array = np.ascontiguousarray(x, dtype=np.float32)
    if array.ndim != 4:
        raise ValueError(f"{what}: expected an array of shape (N, C, H, W), got shape {array.shape}")
    return {"data": array.tobytes(), "shape": list(array.shape)}


def _floats(value: Union[float, Sequence[float]]) -> List[float]:
    if isinstance(value, (int, float)):
        return [float(value)]
    return [float(v) for v in value]


def _crop(crop: Union[None, int, Tuple[int, int]]) -> Optional[List[int]]:
    if crop is None:
        return None
    if isinstance(crop, int):
        return [crop, crop]
    return [int(crop[0]), int(crop[1])]


def _shape(data_shape: Optional[Sequence[int]]) -> Optional[List[int]]:
    return None if data_shape is None else [int(d) for d in data_shape]


def _default_destination(model: Union[str, os.PathLike[str]], save_format: Optional[str] = None) -> str:
    """Beside the input: ``NAME.onnx`` gives ``NAME-accnn.onnx``, an MXNet prefix ``PREFIX-accnn``;
    with ``save_format`` the other format's name (``PREFIX-accnn.onnx``, ``NAME-accnn``)."""
    spec = os.fspath(model)
    onnx_in = spec.lower().endswith(".onnx")
    base = spec[: -len(".onnx")] if onnx_in else spec
    onnx_out = onnx_in if save_format is None else save_format == "onnx"
    return base + ("-accnn.onnx" if onnx_out else "-accnn")


# ---------------------------------------------------------------------------------------------------
# The API


def accelerate(
    model: ModelLike,
    ratio: Optional[float] = None,
    *,
    config: Union[None, Dict[str, Any], str, os.PathLike[str]] = None,
    calibrate: Union[None, NDArray[Any], str, os.PathLike[str]] = None,
    cost: str = "macs",
    save_model: Union[None, str, os.PathLike[str]] = None,
    save_format: Optional[str] = None,
    config_out: Union[None, str, os.PathLike[str]] = None,
    conv_only: bool = False,
    align: int = 1,
    rank_search: Optional[str] = None,
    precision: str = "auto",
    fold_bn: bool = True,
    bias_correction: bool = True,
    gain_restoration: bool = True,
    data_shape: Optional[Sequence[int]] = None,
    epoch: int = 1,
    calib_samples: int = 512,
    calib_split: str = "train",
    calib_positions: int = 16,
    mean: Union[float, Sequence[float]] = 0.0,
    std: Union[float, Sequence[float]] = 1.0,
    pad: int = 0,
    resize: Optional[int] = None,
    crop: Union[None, int, Tuple[int, int]] = None,
    latency_batch: int = 1,
    latency_cache: Union[None, str, os.PathLike[str]] = None,
    runtime: str = "accnn",
    ort_library: Union[None, str, os.PathLike[str]] = None,
    threads: int = 0,
    progress: Optional[bool] = None,
) -> Tuple[Any, Report]:
    """Decompose the convolution and fully-connected layers of ``model``; return the new model and its report.

    Args:
        model: an ONNX file path or MXNet checkpoint prefix (``PREFIX-symbol.json`` and
            ``PREFIX-{epoch:04}.params``), the bytes of an ONNX file, or an ``onnx.ModelProto``.
        ratio: the speed-up to reach: MACs (or, with ``cost="latency"``, measured latency) of the
            budgeted layers divided by ``ratio``. Default 2.0 unless ``config`` is given.
        config: ranks to use instead of choosing them: a dict in the config.json schema
            (``{"conv_params": {...}, "fc_params": {...}}``, as ``report.config`` gives) or a path.
        calibrate: fit the decomposition to the network's responses instead of its weights alone:
            a float32 array of preprocessed inputs ``(N, C, H, W)`` (a few hundred training images),
            a path the ``accnn`` command reads (IDX directory, ``.npz``, folder of class subfolders of
            images; preprocessed with ``mean``, ``std``, ``pad``, ``resize``, ``crop``), or
            ``"synthetic"`` for seeded natural-image noise.
        cost: ``"macs"`` (theoretical) or ``"latency"`` (layers timed at ``latency_batch`` in
            ``runtime``; a decomposition that is not faster there is never chosen).
        runtime: where ``cost="latency"`` times: ``"accnn"`` (accnn's engine) or ``"onnxruntime"``
            (ONNX models; the shared library from ``ort_library`` or ``ORT_DYLIB_PATH``, as the
            onnxruntime wheel ships it under ``onnxruntime/capi/``).
        save_model: where to write the new model, in the format it came in (an ``.onnx`` path or an
            MXNet prefix). A path ``model`` is written beside itself by default (``NAME-accnn.onnx``,
            ``PREFIX-accnn``); bytes and ModelProto models are written only when this is given.
        save_format: write ``save_model`` as ``"onnx"`` or ``"mxnet"`` instead of the input's format
            (an MXNet checkpoint leaves MXNet as ``save_format="onnx"``; the default destination's
            name follows it).
        config_out: also write the chosen ranks as config.json here.
        conv_only: budget and decompose convolutions only, like the original tool.
        align: make every chosen rank a multiple of this (and at least this).
        rank_search: what the ranks maximise: ``"energy"`` (default) or ``"seed"`` (the original tool's
            selector), as ``accnn --rank-search``.
        precision: of the SVDs: ``"auto"``, ``"f32"`` or ``"f64"``.
        fold_bn: fold every BatchNorm after a convolution into it first.
        bias_correction: data-free only: give each decomposed layer back, through its bias, the
            response to its input's estimated mean that the truncation lost (as ``accnn``; ``False``
            is ``--no-bias-correction``).
        gain_restoration: with the bias correction, also give each decomposed spatial
            convolution that every path to the output passes through (a chain's layers) the gain
            its truncation lost (``False`` is ``--no-gain-restoration``).
        data_shape: the input shape ``(C, H, W)``; default: the one the model declares.
        progress: ``None`` shows a bar on a terminal only; ``True`` also writes progress lines to
            ``sys.stderr`` elsewhere (a notebook); ``False`` shows nothing.

    Returns:
        ``(new_model, report)``: the new model as the kind given (the path written, as ``str`` or
        :class:`pathlib.Path` like the input; ``bytes``; an ``onnx.ModelProto``) and a :class:`Report`.

    Raises:
        AccnnError: the model, config, data or an option cannot be used (the ``accnn`` command's message).
    """
    native = _model_arg(model, epoch)
    kind = "path" if native["path"] is not None else ("proto" if _is_proto(model) else "bytes")
    config_text = config_path = None
    if isinstance(config, dict):
        config_text = json.dumps(config)
    elif config is not None:
        config_path = os.fspath(config)
        try:
            config_text = Path(config_path).read_text()
        except OSError as e:
            raise AccnnError(f"config {config_path}: {e.strerror or e}") from None
    calibrate_path = calibrate_array = None
    if isinstance(calibrate, (str, os.PathLike)):
        calibrate_path = os.fspath(calibrate)
    elif calibrate is not None:
        calibrate_array = _array_arg(calibrate, "calibrate")
    if save_model is None and native["path"] is not None:
        save_model = _default_destination(native["path"], save_format)
    options = {
        "model": native,
        # Ranks come from the config when there is one; a ratio of 2 otherwise, unless asked.
        "ratio": None if config is not None else float(2.0 if ratio is None else ratio),
        "config_text": config_text,
        "config_path": config_path,
        "cost": cost,
        "conv_only": conv_only,
        "align": align,
        "rank_search": rank_search,
        "precision": precision,
        "fold_bn": fold_bn,
        "bias_correction": bias_correction,
        "gain_restoration": gain_restoration,
        "data_shape": _shape(data_shape),
        "calibrate_path": calibrate_path,
        "calibrate_array": calibrate_array,
        "calib_samples": calib_samples,
        "calib_split": calib_split,
        "calib_positions": calib_positions,
        "mean": _floats(mean),
        "std": _floats(std),
        "pad": pad,
        "resize": resize,
        "crop": _crop(crop),
        "latency_batch": latency_batch,
        "threads": threads,
        "latency_cache": None if latency_cache is None else os.fspath(latency_cache),
        "runtime": runtime,
        "ort_library": None if ort_library is None else os.fspath(ort_library),
        "save_model": None if save_model is None else os.fspath(save_model),
        "save_format": save_format,
        "config_out": None if config_out is None else os.fspath(config_out),
        "want_bytes": kind != "path",
        "progress": progress,
    }
    new_bytes, native_report = _accnn.accelerate(options)
    report = Report._from_native(native_report)
    for warning in report.warnings:
        warnings.warn(warning, RuntimeWarning, stacklevel=2)
    if report.fidelity is not None and report.fidelity.relative_error > _FIDELITY_WARNING:
        advice = (
            "ask for a lower ratio, or calibrate on more images"
            if calibrate is not None
            else "fit the factors to data with calibrate=..., or ask for a lower ratio"
        )
        warnings.warn(
            f"the model's outputs changed by {100 * report.fidelity.relative_error:.0f}% (relative); to keep them, {advice}",
            RuntimeWarning,
            stacklevel=2,
        )
    if kind == "path":
        assert save_model is not None
        return (Path(save_model) if isinstance(model, Path) else os.fspath(save_model)), report
    assert new_bytes is not None
    if kind == "proto":
        import onnx

        return onnx.load_from_string(new_bytes), report
    return new_bytes, report


def inspect(model: ModelLike, *, data_shape: Optional[Sequence[int]] = None, epoch: int = 1) -> Inspection:
    """Every convolution and fully-connected layer of ``model`` with its shapes, MACs, parameters and
    largest rank; ``str()`` of the result is the table ``accnn inspect`` prints."""
    d = _accnn.inspect(_model_arg(model, epoch), _shape(data_shape))
    return Inspection(
        name=d["name"],
        data_shape=tuple(d["data_shape"]),
        layers=tuple(
            LayerInfo(**{**layer, "weight_shape": tuple(layer["weight_shape"])}) for layer in d["layers"]
        ),
        macs=d["macs"],
        params=d["params"],
        warnings=tuple(d["warnings"]),
        table=d["table"],
    )


def run(model: ModelLike, x: NDArray[Any], *, threads: int = 0, epoch: int = 1) -> List[NDArray[np.float32]]:
    """The outputs of ``model`` on ``x`` (float32 ``(N, C, H, W)``), run by accnn's engine, as numpy arrays."""
    outputs = _accnn.run(_model_arg(model, epoch), _array_arg(x, "x"), threads)
    return [np.frombuffer(data, dtype=np.float32).reshape(shape).copy() for data, shape in outputs]


def evaluate(
    model: ModelLike,
    x: Union[NDArray[Any], str, os.PathLike[str]],
    y: Optional[Sequence[int]] = None,
    *,
    reference: Optional[ModelLike] = None,
    batch: int = 256,
    threads: int = 0,
    split: str = "t10k",
    limit: Optional[int] = None,
    mean: Union[float, Sequence[float]] = 0.0,
    std: Union[float, Sequence[float]] = 1.0,
    pad: int = 0,
    resize: Optional[int] = None,
    crop: Union[None, int, Tuple[int, int]] = None,
    data_shape: Optional[Sequence[int]] = None,
    epoch: int = 1,
    progress: Optional[bool] = None,
) -> Evaluation:
    """Top-1 and top-5 accuracy of ``model`` on labelled images, run by accnn's engine.

    ``x`` is a float32 array of preprocessed inputs ``(N, C, H, W)`` with labels ``y``, or a path the
    ``accnn eval`` command reads (IDX directory with ``split``, ``.npz`` of ``x`` and ``y``, folder of
    class subfolders), preprocessed with ``mean``, ``std``, ``pad``, ``resize`` and ``crop``. With
    ``reference`` (say, the original model) the agreement of the two models' best classes is reported.
    ``progress`` as for :func:`accelerate`.
    """
    data: Dict[str, Any] = {
        "x": None,
        "y": None,
        "path": None,
        "split": split,
        "limit": limit,
        "mean": _floats(mean),
        "std": _floats(std),
        "pad": pad,
        "resize": resize,
        "crop": _crop(crop),
        "data_shape": _shape(data_shape),
    }
    if isinstance(x, (str, os.PathLike)):
        data["path"] = os.fspath(x)
    else:
        data["x"] = _array_arg(x, "x")
        if y is None:
            raise ValueError("y: labels are needed with an array x")
        data["y"] = [int(label) for label in np.asarray(y).reshape(-1)]
    ref = None if reference is None else _model_arg(reference)
    return Evaluation(**_accnn.evaluate(_model_arg(model, epoch), data, ref, batch, threads, progress))


def benchmark(
    a: ModelLike,
    b: ModelLike,
    batch: Union[int, Sequence[int]] = (1, 8, 32),
    *,
    rounds: int = 10,
    warmup: int = 2,
    threads: int = 0,
    data_shape: Optional[Sequence[int]] = None,
) -> Benchmark:
    """Measured speed-up of ``b`` (say, the accelerated model) over ``a`` in accnn's engine: the two run
    alternately, ``rounds`` times each per batch size after ``warmup`` untimed runs."""
    batches = [batch] if isinstance(batch, int) else list(batch)
    d = _accnn.benchmark(_model_arg(a), _model_arg(b), batches, rounds, warmup, threads, _shape(data_shape))
    rows = tuple(
        BenchmarkRow(**{**r, "a_iqr_ms": tuple(r["a_iqr_ms"]), "b_iqr_ms": tuple(r["b_iqr_ms"])})
        for r in d["results"]
    )
    return Benchmark(a=d["a"], b=d["b"], theoretical_speedup=d["theoretical_speedup"], results=rows)
