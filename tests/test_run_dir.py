"""Run records: resume only under the same config and inputs, refuse with the difference, finished only at the end."""

from dataclasses import dataclass

import pytest

from cvlearn.run_dir import RunMismatchError, describe_difference, file_sha256, open_run, read_record


@dataclass(frozen=True)
class _Config:
    out: str = "runs/x"
    sigma: tuple = (0.1,)
    n_steps: int = 100


def test_new_run_then_resume_then_finished(tmp_path):
    cv = tmp_path / "cv.pt"
    cv.write_bytes(b"weights")
    run = open_run(tmp_path / "run.json", _Config(), {"cv": cv})
    assert not run.resumed and not run.finished
    again = open_run(tmp_path / "run.json", _Config(out="moved"), {"cv": cv})  # `out` may change
    assert again.resumed and not again.finished
    again.mark_finished(n_steps=100)
    assert open_run(tmp_path / "run.json", _Config(), {"cv": cv}).finished


def test_changed_config_or_input_is_refused_with_the_difference(tmp_path):
    cv = tmp_path / "cv.pt"
    cv.write_bytes(b"weights")
    open_run(tmp_path / "run.json", _Config(), {"cv": cv})
    with pytest.raises(RunMismatchError, match=r"sigma: \[0\.1\] -> \[0\.3\].*--restart-fresh.*--out"):
        open_run(tmp_path / "run.json", _Config(sigma=(0.3,)), {"cv": cv})
    cv.write_bytes(b"other weights")
    with pytest.raises(RunMismatchError, match=r"inputs\.cv: sha256:[0-9a-f]{64} -> sha256:"):
        open_run(tmp_path / "run.json", _Config(), {"cv": cv})


def test_restart_fresh_deletes_the_outputs(tmp_path):
    open_run(tmp_path / "run.json", _Config(), outputs=[tmp_path / "COLVAR"])
    (tmp_path / "COLVAR").write_text("#! FIELDS time\n")
    (tmp_path / "keep.txt").write_text("not ours")
    run = open_run(tmp_path / "run.json", _Config(n_steps=5), outputs=[tmp_path / "COLVAR"], restart_fresh=True)
    assert not run.resumed and not (tmp_path / "COLVAR").exists() and (tmp_path / "keep.txt").exists()


def test_outputs_without_a_record_are_refused(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(RunMismatchError, match="outputs of an unrecorded run exist"):
        open_run(tmp_path / "run.json", _Config(), outputs=[tmp_path / "summary.json"])


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    stale = tmp_path / ".COLVAR.ab12cd_9"
    stale.write_text("half")
    open_run(tmp_path / "run.json", _Config(), outputs=[tmp_path / "COLVAR"])
    assert not stale.exists()


def test_difference_and_hash_helpers(tmp_path):
    assert describe_difference({"a": {"b": 1}, "c": 2}, {"a": {"b": 2}, "d": 3}) == [
        "a.b: 1 -> 2", "c: 2 -> <none>", "d: <none> -> 3"]
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@dataclass(frozen=True)
class _NewerConfig(_Config):
    device: str = "cpu"  # a key added after the run was recorded


@dataclass(frozen=True)
class _DroppedConfig:
    out: str = "runs/x"
    sigma: tuple = (0.1,)  # n_steps dropped from the config type since the run was recorded


def test_a_key_added_since_the_record_matches_at_its_default_only(tmp_path):
    open_run(tmp_path / "run.json", _Config())
    assert open_run(tmp_path / "run.json", _NewerConfig()).resumed
    with pytest.raises(RunMismatchError, match=r"device: <none> -> cuda"):
        open_run(tmp_path / "run.json", _NewerConfig(device="cuda"))
    with pytest.raises(RunMismatchError, match=r"n_steps: 100 -> <none>"):  # a key dropped since is a difference
        open_run(tmp_path / "run.json", _DroppedConfig())


def test_a_key_added_to_a_mapping_config_matches_at_its_as_before_value_only(tmp_path):
    open_run(tmp_path / "run.json", {"n_steps": 100})
    assert read_record(tmp_path / "run.json")["config"] == {"n_steps": 100}
    assert read_record(tmp_path / "absent.json") is None
    newer = {"n_steps": 100, "lags_ps": (2.0, 10.0)}
    assert open_run(tmp_path / "run.json", newer, added={"lags_ps": [2.0, 10.0]}).resumed
    with pytest.raises(RunMismatchError, match=r"lags_ps: <none> -> \[2\.0, 5\.0\]"):
        open_run(tmp_path / "run.json", {**newer, "lags_ps": (2.0, 5.0)}, added={"lags_ps": [2.0, 10.0]})
    with pytest.raises(RunMismatchError, match=r"lags_ps: <none> -> \[2\.0, 10\.0\]"):  # a mapping has no defaults
        open_run(tmp_path / "run.json", newer)


def test_raising_an_extendable_key_reopens_a_finished_run(tmp_path):
    open_run(tmp_path / "run.json", _Config(n_steps=100), extendable=("n_steps",)).mark_finished()
    run = open_run(tmp_path / "run.json", _Config(n_steps=300), extendable=("n_steps",))
    assert run.resumed and not run.finished and run.extended == {"n_steps": [100, 300]}
    again = open_run(tmp_path / "run.json", _Config(n_steps=300), extendable=("n_steps",))  # recorded at once
    assert again.resumed and not again.extended and again.record["extensions"] == [{"n_steps": [100, 300]}]
    with pytest.raises(RunMismatchError, match=r"n_steps: 300 -> 200\) \(n_steps can be raised"):
        open_run(tmp_path / "run.json", _Config(n_steps=200), extendable=("n_steps",))
    with pytest.raises(RunMismatchError, match=r"sigma: \[0\.1\] -> \[0\.2\]"):  # a longer run of another config
        open_run(tmp_path / "run.json", _Config(n_steps=400, sigma=(0.2,)), extendable=("n_steps",))
    with pytest.raises(RunMismatchError, match=r"n_steps: 300 -> 400"):  # not extendable here
        open_run(tmp_path / "run.json", _Config(n_steps=400))
    assert open_run(tmp_path / "run.json", _Config(n_steps=300)).record["config"]["n_steps"] == 300


def test_an_ignored_key_is_not_compared_even_where_an_older_record_holds_it(tmp_path):
    """Analysis settings made ignorable after runs were recorded: the old record keeps them, a rerun may change them."""
    open_run(tmp_path / "run.json", {"n_steps": 100, "bins": 30})
    assert open_run(tmp_path / "run.json", {"n_steps": 100, "bins": 40}, ignore=("out", "bins")).resumed
    with pytest.raises(RunMismatchError, match=r"n_steps: 100 -> 200"):
        open_run(tmp_path / "run.json", {"n_steps": 200, "bins": 40}, ignore=("out", "bins"))
    with pytest.raises(RunMismatchError, match=r"bins: 30 -> 40"):
        open_run(tmp_path / "run.json", {"n_steps": 100, "bins": 40})
