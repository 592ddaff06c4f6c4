"""Type stubs of the native half of accnn (``accnn._accnn``). Use the functions of ``accnn`` itself:
these take the plain data that ``accnn/__init__.py`` prepares."""

from typing import Any, Optional, Sequence, Tuple

__version__: str
# The environment variable and value candle's CPU workers' spin limit is set to on import.
CANDLE_SPIN: Tuple[str, str]

class AccnnError(Exception):
    """A model, data or option accnn cannot work with; the message is the ``accnn`` command's."""

def run_cli(argv: Sequence[str]) -> int: ...
def accelerate(options: dict[str, Any]) -> Tuple[Optional[bytes], dict[str, Any]]: ...
def inspect(model: dict[str, Any], data_shape: Optional[Sequence[int]] = None) -> dict[str, Any]: ...
def run(model: dict[str, Any], x: dict[str, Any], threads: int = 0) -> list[Tuple[bytes, list[int]]]: ...
def evaluate(
    model: dict[str, Any],
    data: dict[str, Any],
    reference: Optional[dict[str, Any]] = None,
    batch: int = 256,
    threads: int = 0,
    progress: Optional[bool] = None,
) -> dict[str, Any]: ...
def benchmark(
    a: dict[str, Any],
    b: dict[str, Any],
    batches: Sequence[int],
    rounds: int = 10,
    warmup: int = 2,
    threads: int = 0,
    data_shape: Optional[Sequence[int]] = None,
) -> dict[str, Any]: ...
