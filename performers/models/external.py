"""Run a model shipped as an external command (a vendor's container or script).

Why: AI vendors ship models as containers with a file-based entry point, not as Python
plugins. This adapter turns such a command into a :class:`~performers.models.base.Model`:
volumes go out as NIfTI, results come back as NIfTI + JSON, and everything coming back
is checked before it can reach a PACS (a misaligned label map or a malformed number
must stop the workitem, not produce a wrong SEG).

The contract (what a vendor implements)
---------------------------------------
The command is a list of arguments (no shell); ``{input}`` and ``{output}`` in any
argument are replaced by two directories, e.g.
``["docker", "run", "--rm", "-v", "{input}:/in:ro", "-v", "{output}:/out", "vendor/m:1", "/in", "/out"]``.
It runs in a fresh temporary working directory, stdin closed, with ``timeout`` seconds
to finish (then its whole process group is killed).

``{input}`` holds:

* ``current.nii.gz``: the current volume, NIfTI-1, RAS affine in the sform, mm;
* ``prior.nii.gz``: the prior volume (only when the workitem has one), its own grid;
* ``parameters.json``: a JSON object of the workitem's processing parameters, each under
  its concept name meaning and its code value, values as numbers or strings.

The command writes to ``{output}``:

* ``labels.nii.gz``: integer label map, 0 = background, 1..N = findings, on exactly the
  grid of ``current.nii.gz`` (same shape and affine within 1e-4 mm; copying that file's
  affine and header is the safe way);
* ``results.json``::

    {"findings": [{"label": 1,
                   "type": {"value": "52988006", "scheme": "SCT", "meaning": "Lesion"},
                   "site": {"value": "12738006", "scheme": "SCT", "meaning": "Brain"} | null,
                   "description": "Lesion 1",
                   "measurements": [{"name": {...code...}, "value": 412.5,
                                     "unit": {"value": "mm3", "scheme": "UCUM", "meaning": "cubic millimeter"}}],
                   "qualitative": [{"name": {...code...}, "value": {...code...}}]}],   # optional
     "summary": [measurements...],
     "qualitative": [{"name": {...}, "value": {...}}],                               # optional
     "parameters": {"name": value}}                                                  # optional

  Codes are ``{"value", "scheme", "meaning"}`` plus optional ``"scheme_version"``.
  Finding labels must be 1..N without gaps, each present in ``labels.nii.gz``, and the
  label map must hold no other label. Unknown keys are errors (a misspelt key would
  otherwise silently drop a result). ``parameters`` are the parameters actually used;
  without it the given ones are echoed.

Exit status 0 means success; anything else, a timeout, or output that breaks the
contract raises :class:`ModelError` naming the file and field.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from performers.models.base import Code, Finding, InputSpec, Measurement, ModelInput, ModelOutput, Qualitative
from performers.volumes import GeometryMismatch, from_nifti, to_nifti

STDERR_LINES = 20  # how much of a failed command's stderr a ModelError quotes


class ModelError(Exception):
    """The external model failed or broke the output contract (module docstring)."""


# --------------------------------------------------------------------------- results.json schema

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Text = Annotated[str, Field(min_length=1)]


class CodeJSON(_Strict):
    value: Text
    scheme: Text
    meaning: Text
    scheme_version: str | None = None

    def code(self) -> Code:
        return Code(self.value, self.scheme, self.meaning, self.scheme_version)


class MeasurementJSON(_Strict):
    name: CodeJSON
    value: Annotated[float, Field(allow_inf_nan=False)]
    unit: CodeJSON

    def measurement(self) -> Measurement:
        return Measurement(self.name.code(), float(self.value), self.unit.code())


class QualitativeJSON(_Strict):
    name: CodeJSON
    value: CodeJSON

    def qualitative(self) -> Qualitative:
        return Qualitative(self.name.code(), self.value.code())


class FindingJSON(_Strict):
    label: Annotated[int, Field(ge=1)]
    type: CodeJSON
    site: CodeJSON | None = None
    description: str
    measurements: list[MeasurementJSON] = []
    qualitative: list[QualitativeJSON] = []


class ResultsJSON(_Strict):
    findings: list[FindingJSON]
    summary: list[MeasurementJSON] = []
    qualitative: list[QualitativeJSON] = []
    parameters: dict[str, str | float] | None = None


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_results(text: str, source: str = "results.json") -> ResultsJSON:
    """Validate ``results.json``; :class:`ModelError` names the first bad fields."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    try:
        return ResultsJSON.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
        more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise ModelError(f"{source}: " + "; ".join(problems) + more) from None


# --------------------------------------------------------------------------- the adapter

@dataclass
class ExternalModel:
    """A :class:`~performers.models.base.Model` whose ``run`` executes ``command``."""

    name: str
    version: str
    manufacturer: str
    device_uid: str
    workitem_code: Code
    inputs: Sequence[InputSpec]
    command: list[str]
    timeout: float = 600.0
    env: dict[str, str] = field(default_factory=dict)  # added to the performer's environment

    def __post_init__(self) -> None:
        if not self.command or not all(isinstance(a, str) for a in self.command):
            raise ValueError(f"model {self.name}: command must be a non-empty list of strings, got {self.command!r}")
        if not self.timeout > 0:
            raise ValueError(f"model {self.name}: timeout must be > 0 seconds, got {self.timeout!r}")

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    def run(self, inputs: ModelInput) -> ModelOutput:
        with tempfile.TemporaryDirectory(prefix="aiw-external-") as tmp:
            indir, outdir = Path(tmp, "input"), Path(tmp, "output")
            indir.mkdir()
            outdir.mkdir()
            to_nifti(inputs.current, indir / "current.nii.gz")
            if inputs.prior is not None:
                to_nifti(inputs.prior, indir / "prior.nii.gz")
            (indir / "parameters.json").write_text(json.dumps(dict(inputs.parameters), indent=2))
            self._execute(indir, outdir, Path(tmp))
            return self._collect(inputs, outdir)

    def _execute(self, indir: Path, outdir: Path, cwd: Path) -> None:
        argv = [a.replace("{input}", str(indir)).replace("{output}", str(outdir)) for a in self.command]
        err_path = cwd / "stderr.txt"
        try:
            with open(err_path, "wb") as err, open(cwd / "stdout.txt", "wb") as out:
                # own session: on timeout the whole process group goes, not just the launcher
                proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        env={**os.environ, **self.env}, start_new_session=True)
                try:
                    status = proc.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    raise ModelError(f"{self}: no result within the timeout of {self.timeout:g} s; "
                                     f"killed {argv[0]}{_tail(err_path)}") from None
        except OSError as exc:  # not found, not executable
            raise ModelError(f"{self}: cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        if status != 0:
            how = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
            raise ModelError(f"{self}: {argv[0]} {how}{_tail(err_path)}")

    def _collect(self, inputs: ModelInput, outdir: Path) -> ModelOutput:
        missing = [n for n in ("labels.nii.gz", "results.json") if not (outdir / n).is_file()]
        if missing:
            present = sorted(p.name for p in outdir.iterdir()) or ["nothing"]
            raise ModelError(f"{self}: the command exited 0 but did not write {' and '.join(missing)} "
                             f"(output directory holds: {', '.join(present)})")
        results = parse_results((outdir / "results.json").read_text(errors="replace"))
        try:
            labels = from_nifti(outdir / "labels.nii.gz", like=inputs.current)
        except GeometryMismatch as exc:
            raise ModelError(f"{self}: {exc}") from None
        label_map = _integer_labels(labels.array)
        _check_labels(label_map, results)
        findings = [Finding(label=f.label, finding_type=f.type.code(), description=f.description,
                            site=f.site.code() if f.site else None,
                            measurements=[m.measurement() for m in f.measurements],
                            qualitative=[q.qualitative() for q in f.qualitative])
                    for f in sorted(results.findings, key=lambda f: f.label)]
        params = dict(results.parameters) if results.parameters is not None else dict(inputs.parameters)
        return ModelOutput(label_map=label_map, findings=findings,
                           summary=[m.measurement() for m in results.summary],
                           qualitative=[q.qualitative() for q in results.qualitative], parameters=params)


def _tail(path: Path) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.rstrip() for line in deque(f, maxlen=STDERR_LINES) if line.strip()]
    except OSError:
        return ""
    return "; last lines of stderr:\n" + "\n".join(lines) if lines else " (stderr was empty)"


def _integer_labels(array: np.ndarray) -> np.ndarray:
    """Labels as unsigned integers; float storage is accepted when every value is whole
    (many tools save label maps as float32), anything else is an error."""
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ModelError("labels.nii.gz: holds non-integer values; a label map must hold whole numbers")
    if array.size and array.min() < 0:
        raise ModelError(f"labels.nii.gz: holds negative label {int(array.min())}")
    top = int(array.max()) if array.size else 0
    return array.astype(np.uint16 if top < 65536 else np.uint32)


def _check_labels(label_map: np.ndarray, results: ResultsJSON) -> None:
    labels = [f.label for f in results.findings]
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise ModelError(f"results.json: findings: label {dup[0]} appears more than once")
    if sorted(labels) != list(range(1, len(labels) + 1)):
        raise ModelError(f"results.json: findings: labels must run 1..{len(labels)} without gaps, "
                         f"got {sorted(labels)}")
    present = set(np.unique(label_map).tolist()) - {0}
    extra = sorted(present - set(labels))
    if extra:
        raise ModelError(f"labels.nii.gz: label {extra[0]} has no finding in results.json")
    empty = sorted(set(labels) - present)
    if empty:
        raise ModelError(f"results.json: finding with label {empty[0]} has no voxels in labels.nii.gz")


__all__ = ["ExternalModel", "ModelError", "ResultsJSON", "parse_results"]
