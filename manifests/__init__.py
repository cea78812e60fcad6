"""Batch manifests: the row model (:mod:`manifests.schema`), validation (:mod:`manifests.validate`) and
building a manifest from a CSV, a JSON list or a folder of pairs (:mod:`manifests.build`).
The bundled example is ``manifests/example/manifest.parquet``."""

from pathlib import Path

from manifests.schema import ManifestRow
from manifests.validate import InvalidRow, ManifestError, Problem, ValidationReport, validate_manifest

#: The bundled example manifest (over the project's own sample data).
EXAMPLE_MANIFEST: Path = Path(__file__).resolve().parent / "example" / "manifest.parquet"
#: Where the example's rows point (its speech beside it, the portrait in the project's tests/data): the
#: allowed input prefixes to run it with (``--allow-prefix``; the default would be its folder only).
EXAMPLE_ALLOWED_PREFIXES: tuple[str, ...] = (
    str(EXAMPLE_MANIFEST.parent),
    str(EXAMPLE_MANIFEST.parents[2] / "tests" / "data"),
)

__all__ = [
    "EXAMPLE_ALLOWED_PREFIXES",
    "EXAMPLE_MANIFEST",
    "InvalidRow",
    "ManifestError",
    "ManifestRow",
    "Problem",
    "ValidationReport",
    "validate_manifest",
]
