"""Acceptance tests of the models: the reference model against synthetic truth (axial and
oblique), the external-command adapter run for real, and model discovery."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from performers.models import registry
from performers.models.base import (
    BRAIN,
    CHANGE_IN_LESION_COUNT,
    CHANGE_IN_TOTAL_VOLUME,
    COUNT_UNIT,
    LESION,
    MM3,
    NUMBER_OF_LESIONS,
    TOTAL_LESION_VOLUME,
    VOLUME,
    Code,
    InputSpec,
    Model,
    ModelInput,
    ModelOutput,
    UnusableInput,
)
from performers.models.external import ExternalModel, ModelError
from performers.models.lesions import INCREASED, LESION_BURDEN_TREND, LesionModel
from performers.synthetic import Lesion, Study, make_pair, make_study, truth_labels
from performers.volumes import load_series

GRID = dict(shape=(96, 96, 48), spacing=(1.5, 1.5, 1.5))


def _load(study: Study) -> hd.Volume:
    return load_series(study.flair.datasets, modality="MR")[0]


@pytest.fixture(scope="module", params=[False, True], ids=["axial", "oblique"])
def case(request: pytest.FixtureRequest) -> tuple[Study, hd.Volume]:
    study = make_study(21, oblique=request.param, **GRID)
    return study, _load(study)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def centroid_mm(volume: hd.Volume, mask: np.ndarray) -> np.ndarray:
    return volume.affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + volume.affine[:3, 3]


def summary(out: ModelOutput) -> dict[str, float]:
    return {m.name.meaning: m.value for m in out.summary}


# --------------------------------------------------------------------------- reference model

def test_reference_model_finds_each_true_lesion(case: tuple[Study, hd.Volume]) -> None:
    study, volume = case
    out = LesionModel().run(ModelInput({"current": volume}))
    truth = truth_labels(study, volume)
    assert out.label_map.shape == tuple(volume.spatial_shape)
    assert dice(out.label_map, truth) >= 0.9
    assert len(out.findings) == len(study.lesions) == 5
    volumes = {f.label: f.measurements[0].value for f in out.findings}
    for i, lesion in enumerate(study.lesions, start=1):
        hits = set(np.unique(out.label_map[truth == i]).tolist()) - {0}
        assert len(hits) == 1, f"true lesion {i} overlaps found labels {hits}"
        found = hits.pop()
        assert np.linalg.norm(centroid_mm(volume, out.label_map == found) - lesion.center) <= 1.5
        true_mm3 = float((truth == i).sum()) * volume.voxel_volume
        assert volumes[found] == pytest.approx(true_mm3, rel=0.15)


def test_reference_model_output_is_what_the_encoders_expect(case: tuple[Study, hd.Volume]) -> None:
    _, volume = case
    out = LesionModel().run(ModelInput({"current": volume}))
    assert np.issubdtype(out.label_map.dtype, np.integer)
    labels = [f.label for f in out.findings]
    assert labels == list(range(1, len(labels) + 1)) == sorted(set(np.unique(out.label_map).tolist()) - {0})
    sizes = [f.measurements[0].value for f in out.findings]
    assert sizes == sorted(sizes, reverse=True)  # largest first
    for f in out.findings:
        assert (f.finding_type, f.site) == (LESION, BRAIN)
        (m,) = f.measurements
        assert (m.name, m.unit) == (VOLUME, MM3)
        assert m.value == pytest.approx((out.label_map == f.label).sum() * volume.voxel_volume, rel=1e-6)
    count, total = out.summary
    assert (count.name, count.unit, count.value) == (NUMBER_OF_LESIONS, COUNT_UNIT, 5.0)
    assert (total.name, total.unit) == (TOTAL_LESION_VOLUME, MM3)
    assert total.value == pytest.approx(sum(sizes), rel=1e-6)
    assert out.parameters == {"threshold_factor": 5.0, "min_lesion_mm3": 10.0}
    assert out.qualitative == []


def test_reference_model_describes_itself() -> None:
    m = LesionModel()
    assert isinstance(m, Model)
    assert (m.name, m.version, m.manufacturer) == ("aiw-flair-lesions", "1.0.0", "aiw")
    assert m.workitem_code == Code("AIW-FLAIR-LES", "99AIW", "FLAIR hyperintense lesion detection")
    assert m.device_uid.startswith("2.25.") and len(m.device_uid) <= 64
    assert [(i.role, i.modality, i.required) for i in m.inputs] == [("current", "MR", True), ("prior", "MR", False)]


def test_prior_comparison_counts_new_lesions_and_volume_growth() -> None:
    current, prior = make_pair(8, **GRID)
    # the prior comes from another acquisition (oblique): totals must not depend on the grid
    prior = make_study(8, oblique=True, lesions=prior.lesions, patient=current, study_date=prior.study_date, **GRID)
    cur_vol, pri_vol = _load(current), _load(prior)
    out = LesionModel().run(ModelInput({"current": cur_vol, "prior": pri_vol}))
    s = summary(out)
    assert s[CHANGE_IN_LESION_COUNT.meaning] == len(current.lesions) - len(prior.lesions) == 2
    truth_change = ((truth_labels(current, cur_vol) > 0).sum() * cur_vol.voxel_volume
                    - (truth_labels(prior, pri_vol) > 0).sum() * pri_vol.voxel_volume)
    assert truth_change > 0
    assert s[CHANGE_IN_TOTAL_VOLUME.meaning] == pytest.approx(truth_change, rel=0.05)
    assert {m.name: m.unit for m in out.summary}[CHANGE_IN_TOTAL_VOLUME] == MM3
    assert {m.name: m.unit for m in out.summary}[CHANGE_IN_LESION_COUNT] == COUNT_UNIT
    assert [(q.name, q.value) for q in out.qualitative] == [(LESION_BURDEN_TREND, INCREASED)]


def test_minimum_size_parameter_drops_small_lesions() -> None:
    lesions = [Lesion((-20.0, -30.0, 25.0), (2.6, 2.6, 2.6)),   # ~74 mm3
               Lesion((25.0, -10.0, 25.0), (5.0, 5.0, 5.0)),    # ~524 mm3
               Lesion((0.0, 20.0, 30.0), (7.0, 6.0, 6.0))]      # ~1056 mm3
    volume = _load(make_study(2, lesions=lesions, **GRID))
    model = LesionModel()
    assert len(model.run(ModelInput({"current": volume})).findings) == 3
    by_code = model.run(ModelInput({"current": volume}, {"min_lesion_mm3": 200.0}))
    by_meaning = model.run(ModelInput({"current": volume}, {"Minimum lesion volume (mm3)": "200"}))
    for out in (by_code, by_meaning):
        assert len(out.findings) == 2 and summary(out)[NUMBER_OF_LESIONS.meaning] == 2
        assert min(f.measurements[0].value for f in out.findings) > 400
        assert out.parameters["min_lesion_mm3"] == 200.0
        assert set(np.unique(out.label_map).tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match=r"min_lesion_mm3 .* must be a number, got 'big'"):
        model.run(ModelInput({"current": volume}, {"min_lesion_mm3": "big"}))


def _blank(shape: tuple[int, int, int], value: float = 0.0) -> hd.Volume:
    return hd.Volume.from_attributes(array=np.full(shape, value, np.float32), image_position=[0, 0, 0],
                                     image_orientation=[1, 0, 0, 0, 1, 0], pixel_spacing=[1, 1],
                                     spacing_between_slices=1, coordinate_system="PATIENT")


def test_blank_image_is_insufficient_quality() -> None:
    with pytest.raises(UnusableInput) as info:
        LesionModel().run(ModelInput({"current": _blank((20, 32, 32))}))
    assert info.value.reason.value == "110531" and "blank" in str(info.value)


def test_single_slice_is_not_supported() -> None:
    with pytest.raises(UnusableInput) as info:
        LesionModel().run(ModelInput({"current": _blank((1, 32, 32), 5.0)}))
    assert info.value.reason.value == "110522" and "3D volume" in str(info.value)


# --------------------------------------------------------------------------- external adapter

EXAMPLE = [sys.executable, "-m", "performers.models.example_external", "{input}", "{output}"]


def external(command: list[str], timeout: float = 60.0) -> ExternalModel:
    return ExternalModel(name="vendor-demo", version="0.1", manufacturer="Vendor", device_uid="1.2.3.4",
                         workitem_code=Code("VND-1", "99VND", "Vendor demo"),
                         inputs=[InputSpec("current", "MR")], command=command, timeout=timeout)


@pytest.fixture(scope="module")
def small() -> tuple[Study, hd.Volume]:
    study = make_study(4, oblique=True, shape=(64, 64, 32), spacing=(1.5, 1.5, 1.5), n_lesions=3)
    return study, _load(study)


def test_adapter_runs_the_vendor_command_end_to_end(small: tuple[Study, hd.Volume]) -> None:
    study, volume = small
    out = external(EXAMPLE).run(ModelInput({"current": volume}, {"min_lesion_mm3": 5.0}))
    truth = truth_labels(study, volume)
    assert out.label_map.shape == tuple(volume.spatial_shape)
    assert dice(out.label_map, truth) >= 0.9
    assert len(out.findings) == 3 and [f.label for f in out.findings] == [1, 2, 3]
    assert out.findings[0].finding_type == LESION and out.findings[0].site == BRAIN
    for f in out.findings:
        assert f.measurements[0].value == pytest.approx((out.label_map == f.label).sum() * volume.voxel_volume,
                                                        rel=1e-3)
    assert summary(out)[NUMBER_OF_LESIONS.meaning] == 3
    assert out.parameters == {"threshold_factor": 5.0, "min_lesion_mm3": 5.0}


# A vendor command that misbehaves in one chosen way after doing the real work.
FAULTY = textwrap.dedent("""
    import json, sys
    import nibabel as nib, numpy as np
    from performers.models.example_external import main
    indir, outdir, fault = sys.argv[1:]
    main([indir, outdir])
    res = json.load(open(outdir + "/results.json"))
    if fault == "string-value":
        res["findings"][0]["measurements"][0]["value"] = "a lot"
    elif fault == "no-description":
        del res["findings"][1]["description"]
    elif fault == "label-gap":
        res["findings"][-1]["label"] = 9
    elif fault == "not-json":
        open(outdir + "/results.json", "w").write("{'findings': []")
        sys.exit(0)
    elif fault == "shifted":
        img = nib.load(outdir + "/labels.nii.gz")
        aff = img.affine.copy()
        aff[:3, 3] += aff[:3, 2]
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), outdir + "/labels.nii.gz")
    json.dump(res, open(outdir + "/results.json", "w"))
""")


CONTRACT_BREAKS = {
    "string-value": r"results\.json: findings\[0\]\.measurements\[0\]\.value: Input should be a valid number",
    "no-description": r"results\.json: findings\[1\]\.description: Field required",
    "label-gap": r"results\.json: findings: labels must run 1\.\.3 without gaps, got \[1, 2, 9\]",
    "not-json": r"results\.json: not valid JSON \(line 1, column 2",
    "shifted": r"labels\.nii\.gz: voxel grid does not match the input volume: origin shifted by .* "
               r"\[0\.0, 0\.0, 1\.0\] voxels along \(slices, rows, columns\)",
}


@pytest.mark.parametrize("fault", list(CONTRACT_BREAKS))
def test_adapter_rejects_output_that_breaks_the_contract(fault: str, tmp_path: Path,
                                                         small: tuple[Study, hd.Volume]) -> None:
    script = tmp_path / "faulty.py"
    script.write_text(FAULTY)
    model = external([sys.executable, str(script), "{input}", "{output}", fault])
    with pytest.raises(ModelError, match=CONTRACT_BREAKS[fault]):
        model.run(ModelInput({"current": small[1]}, {"min_lesion_mm3": 5.0}))


def test_adapter_reports_exit_status_with_stderr(small: tuple[Study, hd.Volume]) -> None:
    crash = external([sys.executable, "-c", "import sys; print('loading weights', file=sys.stderr); "
                      "print('RuntimeError: CUDA out of memory', file=sys.stderr); sys.exit(3)"])
    with pytest.raises(ModelError) as info:
        crash.run(ModelInput({"current": small[1]}))
    assert str(info.value) == (f"vendor-demo 0.1: {sys.executable} exited with status 3; last lines of stderr:\n"
                               "loading weights\nRuntimeError: CUDA out of memory")


def test_adapter_kills_the_whole_command_on_timeout(small: tuple[Study, hd.Volume], tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hang = external([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        print("waiting for the GPU", file=sys.stderr, flush=True)
        child.wait()
    """)], timeout=3)
    t = time.monotonic()
    with pytest.raises(ModelError, match=r"no result within the timeout of 3 s; killed .*\n.*waiting for the GPU"):
        hang.run(ModelInput({"current": small[1]}))
    assert time.monotonic() - t < 20
    child = int(pidfile.read_text())
    time.sleep(0.2)
    status = Path(f"/proc/{child}/status")
    assert not status.exists() or "zombie" in status.read_text(), "the command's child survived the timeout"


def test_adapter_reports_missing_outputs_and_missing_programs(small: tuple[Study, hd.Volume]) -> None:
    with pytest.raises(ModelError, match=r"exited 0 but did not write labels\.nii\.gz and results\.json "
                                         r"\(output directory holds: nothing\)"):
        external([sys.executable, "-c", "pass"]).run(ModelInput({"current": small[1]}))
    with pytest.raises(ModelError, match=r"cannot start '/nonexistent/vendor-model'"):
        external(["/nonexistent/vendor-model", "{input}"]).run(ModelInput({"current": small[1]}))


def test_adapter_passes_volumes_and_parameters_as_files(small: tuple[Study, hd.Volume], tmp_path: Path) -> None:
    """What the vendor sees: current/prior NIfTI on the right grid and the parameters."""
    spy = tmp_path / "spy.py"
    spy.write_text(textwrap.dedent(f"""
        import json, shutil, sys
        shutil.copytree(sys.argv[1], {str(tmp_path / 'seen')!r})
    """))
    with pytest.raises(ModelError, match="did not write"):
        external([sys.executable, str(spy), "{input}"]).run(
            ModelInput({"current": small[1], "prior": small[1]}, {"threshold_factor": 4.0, "Mode": "fast"}))
    seen = tmp_path / "seen"
    assert sorted(p.name for p in seen.iterdir()) == ["current.nii.gz", "parameters.json", "prior.nii.gz"]
    assert json.loads((seen / "parameters.json").read_text()) == {"threshold_factor": 4.0, "Mode": "fast"}
    import nibabel as nib
    img = nib.load(seen / "current.nii.gz")
    np.testing.assert_allclose(img.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ small[1].affine, atol=1e-4)


# --------------------------------------------------------------------------- registry

def test_reference_model_is_registered() -> None:
    assert "aiw-flair-lesions" in registry.available_models()
    model = registry.load_model("aiw-flair-lesions")
    assert isinstance(model, LesionModel) and isinstance(model, Model)
    with pytest.raises(registry.ModelNotFound, match=r"no model named 'nope'; installed: .*aiw-flair-lesions"):
        registry.load_model("nope")


class NotAModel:
    name = "half"


def test_entry_points_add_models(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [EntryPoint("vendor-x", "performers.models.lesions:LesionModel", registry.GROUP),
           EntryPoint("broken", "tests.test_models:NotAModel", registry.GROUP),
           EntryPoint("gone", "vendor_pkg_not_installed:Model", registry.GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: [e for e in eps if e.group == group])
    assert set(registry.available_models()) >= {"aiw-flair-lesions", "vendor-x", "broken"}
    assert isinstance(registry.load_model("vendor-x"), LesionModel)
    with pytest.raises(registry.ModelConfigError, match=r"'broken' .* is not a Model: lacks version, manufacturer"):
        registry.load_model("broken")
    with pytest.raises(registry.ModelConfigError, match=r"'gone': cannot load vendor_pkg_not_installed:Model"):
        registry.load_model("gone")


VALID_YAML = """
models:
  - name: vendor-lesions
    version: "2.1"
    manufacturer: Vendor Inc.
    workitem_code: {value: VND-LES, scheme: 99VND, meaning: Vendor lesion detection}
    inputs:
      - {role: current, modality: MR}
      - {role: prior, modality: MR, required: false}
    command: [python, -m, vendor.run, "{input}", "{output}"]
    timeout: 1800
  - name: vendor-ct
    version: "1.0"
    manufacturer: Vendor Inc.
    device_uid: 1.2.826.0.1.3680043.9.7
    workitem_code: {value: VND-CT, scheme: 99VND, meaning: Vendor CT}
    inputs: [{role: current, modality: CT}]
    command: [vendor-ct, "{input}", "{output}"]
"""


def test_load_external_models_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(VALID_YAML)
    a, b = registry.load_external(path)
    assert isinstance(a, Model) and isinstance(a, ExternalModel)
    assert (a.name, a.version, a.manufacturer, a.timeout) == ("vendor-lesions", "2.1", "Vendor Inc.", 1800.0)
    assert a.workitem_code == Code("VND-LES", "99VND", "Vendor lesion detection")
    assert [(i.role, i.modality, i.required) for i in a.inputs] == [("current", "MR", True), ("prior", "MR", False)]
    assert a.command == ["python", "-m", "vendor.run", "{input}", "{output}"]
    assert a.device_uid == registry.derived_device_uid("vendor-lesions", "2.1")
    assert a.device_uid == registry.load_external(path)[0].device_uid  # stable across loads
    assert a.device_uid.startswith("2.25.") and a.device_uid != registry.derived_device_uid("vendor-lesions", "2.2")
    assert b.device_uid == "1.2.826.0.1.3680043.9.7" and b.timeout == 600.0


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("    workitem_code: {value: VND-LES, scheme: 99VND, meaning: Vendor lesion detection}",
                         "    workitem_code: {value: VND-LES, scheme: 99VND}"),
     r"models\[0\]\.workitem_code\.meaning: Field required"),
    (lambda t: t.replace('version: "2.1"', "version: 2.1"),
     r"models\[0\]\.version: Input should be a valid string \(YAML read 2\.1 as a number: quote it"),
    (lambda t: t.replace("    command: [vendor-ct", "    comand: [vendor-ct"),
     r"models\[1\]\.command: Field required; models\[1\]\.comand: Extra inputs are not permitted"),
    (lambda t: t.replace("{role: prior, modality: MR", "{role: baseline, modality: MR"),
     r"models\[0\]\.inputs\[1\]\.role: Value error, must be 'current' or 'prior', got 'baseline'"),
    (lambda t: t.replace("[{role: current, modality: CT}]", "[{role: prior, modality: CT}]"),
     r"models\[1\]\.inputs: Value error, needs an input with role 'current'"),
    (lambda t: t.replace("device_uid: 1.2.826.0.1.3680043.9.7", "device_uid: 1.2.abc"),
     r"models\[1\]\.device_uid: Value error, '1\.2\.abc' is not a valid UID"),
    (lambda t: t.replace("timeout: 1800", "timeout: -5"),
     r"models\[0\]\.timeout: Input should be greater than 0"),
    (lambda t: t.replace("name: vendor-ct", "name: vendor-lesions"),
     r"models\[1\]\.name: 'vendor-lesions' is already used by models\[0\]"),
    (lambda t: t.replace("models:", "modles:"), r"models: Field required; modles: Extra inputs"),
    (lambda t: t + "\n  - [unbalanced", r"not valid YAML"),
], ids=["missing-meaning", "numeric-version", "misspelt-key", "bad-role", "no-current", "bad-uid",
        "negative-timeout", "duplicate-name", "misspelt-top-level", "bad-yaml"])
def test_load_external_names_the_bad_key(edit, message: str, tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(edit(VALID_YAML))
    with pytest.raises(registry.ModelConfigError, match=message) as info:
        registry.load_external(path)
    assert str(info.value).startswith(f"{path}: ")


def test_external_model_from_yaml_runs(tmp_path: Path, small: tuple[Study, hd.Volume]) -> None:
    """The YAML route ends in the same adapter: a configured command really runs."""
    path = tmp_path / "models.yaml"
    command = json.dumps(EXAMPLE)
    path.write_text(VALID_YAML.replace('[python, -m, vendor.run, "{input}", "{output}"]', command))
    (model, _) = registry.load_external(path)
    out = model.run(ModelInput({"current": small[1]}, {"min_lesion_mm3": 5.0}))
    assert len(out.findings) == 3
    assert os.path.basename(sys.executable) in model.command[0]
