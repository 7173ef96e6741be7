"""CVSpec: exact JSON round trip, strict validation, the lag in ps reconciled with the lag in frames."""

import dataclasses
import json
import math

import pytest
import torch

from cvlearn.export import CV_SPEC_FORMAT, CVSpec
from cvlearn.export.spec import lag_times

FIELDS = dict(n_particles=22, atom_indices=[1, 4, 5], atomic_numbers=[6, 6, 8], residue_of_atom=[0, 1, 1], n_cvs=2,
              dtype="float32", featurizer_architecture="ETFeaturizer", featurizer_sha256="ab" * 32)


def test_round_trip_is_exact():
    spec = CVSpec(**FIELDS, lagtime_ps=0.1 + 0.2, frame_interval_ps=0.1, cv_range_training=[(-1 / 3, 2.5), (0, 1e-17)],
                  component_periods=[None, 2 * math.pi], featurizer_config={"cutoff_angstrom": 5.0},
                  dense_et=["lobe.featurizer"], versions={"torch": torch.__version__}, extra={"names": ("a", "b")})
    again = CVSpec.from_json(spec.to_json())
    assert again == spec and again.format == CV_SPEC_FORMAT
    assert again.atom_indices == (1, 4, 5) and again.extra == {"names": ["a", "b"]}
    assert again.cv_range_training[0] == (-1 / 3, 2.5) and again.component_periods == (None, 2 * math.pi)
    assert again.lagtime_frames == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.n_cvs = 3


@pytest.mark.parametrize("change, match", [
    ({"atomic_numbers": [6, 6]}, "expected 3 atomic_numbers"),
    ({"atom_indices": [1, 4, 22]}, r"atom_indices: expected indices in \[0, 22\)"),
    ({"residue_of_atom": []}, "residue_of_atom: expected at least one entry"),
    ({"lagtime_ps": 0.0}, "lagtime_ps: expected a time > 0"),
    ({"cv_range_training": [(1.0, 0.0), (0, 1)]}, "cv_range_training: expected 2"),
    ({"component_periods": [1.0]}, "component_periods: expected 2"),
    ({"extra": {"x": float("nan")}}, "extra: expected a JSON-serialisable"),
])
def test_invalid_fields_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        CVSpec(**{**FIELDS, **change})


def test_from_json_refuses_old_other_and_unknown():
    with pytest.raises(ValueError, match=r"cv.pt predates the typed CV contract.*re-export"):
        CVSpec.from_json(json.dumps({"n_cvs": 2}), source="cv.pt")
    data = json.loads(CVSpec(**FIELDS).to_json())
    with pytest.raises(ValueError, match="expected CVSpec format 1, found 99"):
        CVSpec.from_dict({**data, "format": 99}, source="cv.pt")
    with pytest.raises(ValueError, match=r"unknown \['colour'\]"):
        CVSpec.from_dict({**data, "colour": 1})
    del data["n_cvs"]
    with pytest.raises(ValueError, match=r"missing \['n_cvs'\]"):
        CVSpec.from_dict(data)


def test_lag_times_reconcile_frames_and_ps():
    class Lagged:
        lagtime = 4

    assert lag_times(object(), None, None) == (None, None)
    assert lag_times(Lagged(), None, 0.5) == (2.0, 0.5)
    assert lag_times(Lagged(), 2.0, None) == (2.0, 0.5)
    assert lag_times(Lagged(), 2.0, 0.5) == (2.0, 0.5)
    with pytest.raises(ValueError, match="lag of 4 frames: pass frame_interval_ps="):
        lag_times(Lagged(), None, None)
    with pytest.raises(ValueError, match="differs from the model's 4 frames"):
        lag_times(Lagged(), 3.0, 0.5)
    with pytest.raises(ValueError, match="frame_interval_ps: expected a time > 0"):
        lag_times(Lagged(), None, -1.0)
