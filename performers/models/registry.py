"""Find models: Python plugins by entry point, external commands by YAML file.

Why entry points: a vendor's Python model becomes available by ``pip install``-ing its
package, which declares ``[project.entry-points."aiw.models"] name = "module:Class"``;
nothing in this project changes. Models shipped as containers are described in a YAML
file instead (:func:`load_external`), because there is no package to install.

The reference model is also in a built-in table so that it is found even where the
package's entry points are not installed (a source checkout); an installed entry point
of the same name wins.
"""

from __future__ import annotations

import importlib
import uuid
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydicom.uid import RE_VALID_UID

from performers.models.base import Code, InputSpec, Model
from performers.models.external import ExternalModel

GROUP = "aiw.models"
BUILTIN: dict[str, str] = {"aiw-flair-lesions": "performers.models.lesions:LesionModel"}


class ModelNotFound(LookupError):
    """No model of that name is installed."""


class ModelConfigError(ValueError):
    """A model cannot be loaded, or an external-model file is invalid (names the key)."""


# --------------------------------------------------------------------------- plugins

def available_models() -> dict[str, str]:
    """Model name -> ``module:attribute`` it is loaded from."""
    found = dict(BUILTIN)
    found.update({ep.name: ep.value for ep in entry_points(group=GROUP)})
    return found


def _resolve(target: str) -> Callable[[], Any] | Any:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


def load_model(name: str) -> Model:
    """An instance of the model registered as ``name`` (a class or factory is called
    without arguments; an instance is used as is)."""
    models = available_models()
    if name not in models:
        raise ModelNotFound(f"no model named {name!r}; installed: {', '.join(sorted(models)) or 'none'}")
    eps = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    try:
        obj = eps[0].load() if eps else _resolve(models[name])
    except (ImportError, AttributeError) as exc:
        raise ModelConfigError(f"model {name!r}: cannot load {models[name]}: {exc}") from exc
    # a class passes isinstance(.., Model) through its class attributes: instantiate it
    model = obj() if isinstance(obj, type) or (callable(obj) and not isinstance(obj, Model)) else obj
    if not isinstance(model, Model):
        missing = [a for a in ("name", "version", "manufacturer", "device_uid", "workitem_code", "inputs", "run")
                   if not hasattr(model, a)]
        raise ModelConfigError(f"model {name!r} ({models[name]}) is not a Model: lacks {', '.join(missing)}")
    return model


# --------------------------------------------------------------------------- external models (YAML)

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _CodeYAML(_Strict):
    value: Annotated[str, Field(min_length=1)]
    scheme: Annotated[str, Field(min_length=1)]
    meaning: Annotated[str, Field(min_length=1)]
    scheme_version: str | None = None


class _InputYAML(_Strict):
    role: str
    modality: Annotated[str, Field(min_length=1, max_length=16)]
    required: bool = True
    description: str = ""

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if v not in ("current", "prior"):
            raise ValueError(f"must be 'current' or 'prior', got {v!r}")
        return v


class _ExternalYAML(_Strict):
    name: Annotated[str, Field(min_length=1)]
    version: Annotated[str, Field(min_length=1)]
    manufacturer: Annotated[str, Field(min_length=1)]
    device_uid: str | None = None
    workitem_code: _CodeYAML
    inputs: Annotated[list[_InputYAML], Field(min_length=1)]
    command: Annotated[list[str], Field(min_length=1)]
    timeout: Annotated[float, Field(gt=0)] = 600.0
    env: dict[str, str] = {}

    @field_validator("device_uid")
    @classmethod
    def _uid(cls, v: str | None) -> str | None:
        if v is not None and not (len(v) <= 64 and RE_VALID_UID.match(v)):
            raise ValueError(f"{v!r} is not a valid UID (digits and dots, at most 64 characters)")
        return v

    @field_validator("inputs")
    @classmethod
    def _roles(cls, v: list[_InputYAML]) -> list[_InputYAML]:
        roles = [i.role for i in v]
        if len(set(roles)) != len(roles):
            raise ValueError(f"each role may appear once, got {roles}")
        if "current" not in roles:
            raise ValueError("needs an input with role 'current' (the study the results belong to)")
        return v


class _FileYAML(_Strict):
    models: Annotated[list[_ExternalYAML], Field(min_length=1)]


def derived_device_uid(name: str, version: str) -> str:
    """Stable '2.25.' UID for an algorithm that has none: same name+version, same UID."""
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_OID, f"aiw/external/{name}/{version}").int)


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _hint(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    if err["loc"] and err["loc"][-1] == "version" and not isinstance(err.get("input"), str):
        msg += f" (YAML read {err.get('input')!r} as a number: quote it, e.g. \"{err.get('input')}\")"
    return msg


def load_external(path: Path | str) -> list[ExternalModel]:
    """External models described in the YAML file ``path``::

        models:
          - name: vendor-lesions
            version: "2.1"                 # a string: quote it
            manufacturer: Vendor Inc.
            device_uid: 1.2.3.4            # optional; derived from name+version if absent
            workitem_code: {value: VND-LES, scheme: 99VND, meaning: Vendor lesion detection}
            inputs:
              - {role: current, modality: MR}
              - {role: prior, modality: MR, required: false}
            command: [docker, run, --rm, -v, "{input}:/in:ro", -v, "{output}:/out", vendor/les:2.1, /in, /out]
            timeout: 1800                  # seconds, default 600
            env: {OMP_NUM_THREADS: "2"}    # optional

    :class:`ModelConfigError` names the file and key of the first problems.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ModelConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ModelConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        spec = _FileYAML.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{_where(e['loc']) or '(top level)'}: {_hint(e)}" for e in exc.errors()[:5]]
        raise ModelConfigError(f"{path}: " + "; ".join(problems)) from None
    names = [m.name for m in spec.models]
    codes = [(m.workitem_code.value, m.workitem_code.scheme) for m in spec.models]
    for what, values in (("name", names), ("workitem_code", codes)):
        for i, v in enumerate(values):
            if values.index(v) != i:
                first = values.index(v)
                raise ModelConfigError(f"{path}: models[{i}].{what}: {v!r} is already used by models[{first}]")
    return [ExternalModel(
        name=m.name, version=m.version, manufacturer=m.manufacturer,
        device_uid=m.device_uid or derived_device_uid(m.name, m.version),
        workitem_code=Code(m.workitem_code.value, m.workitem_code.scheme, m.workitem_code.meaning,
                           m.workitem_code.scheme_version),
        inputs=[InputSpec(i.role, i.modality, i.required, i.description) for i in m.inputs],
        command=list(m.command), timeout=float(m.timeout), env=dict(m.env)) for m in spec.models]


__all__ = ["available_models", "load_model", "load_external", "derived_device_uid", "ModelNotFound",
           "ModelConfigError", "GROUP", "BUILTIN"]
