"""Sweeps: specs and sweep files without a server, then create, watch, wait,
get, list and cancel against the real server and its two workers (which
evaluates every epoch: the server's default ``eval_every_epochs = 1``)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from rwp_client import (
    Client,
    Distribution,
    EarlyStopping,
    InvalidArgument,
    JobSpec,
    JobState,
    Method,
    Model,
    NotFound,
    Search,
    SearchMode,
    SearchParam,
    Sweep,
    SweepSpec,
    SweepState,
)

REPO = Path(__file__).resolve().parents[3]

# The MLP on the built-in dataset: 1,000 training images, 200 held out for
# validation, batch 100: 8 updates per epoch, 2 epochs.
BASE = JobSpec(method=Method.M_ARWP, model=Model.MLP, epochs=2, batch_size=100, seed=5, validation_fraction=0.2)
SIGMAS = (0.003, 0.03, 0.3)
GRID = SweepSpec(base=BASE, search=Search(params=(SearchParam.grid("sigma", SIGMAS),)), concurrency=2)


# -- without a server -------------------------------------------------------------


def test_defaults_match_the_rust_side() -> None:
    # crates/rwp-spec/src/sweep.rs and crates/rwp-sdk/src/sweep_file.rs.
    assert SweepSpec(base=BASE, search=Search(params=())).concurrency == 1
    search = Search(params=())
    assert (search.mode, search.n_trials, search.seed) == (SearchMode.GRID, None, 0)
    stopping = EarlyStopping(rungs=(1, 2))
    assert (stopping.reduction_factor, stopping.min_validation_accuracy) == (3.0, None)


def test_a_sweep_spec_round_trips_through_proto() -> None:
    spec = SweepSpec(
        base=dataclasses.replace(BASE, sigma=0.01),
        search=Search(
            mode=SearchMode.RANDOM,
            n_trials=12,
            seed=7,
            params=(
                SearchParam(field="sigma", distribution=Distribution.LOG_UNIFORM, low=0.003, high=0.03),
                SearchParam(field="epochs", distribution=Distribution.INT_UNIFORM, low=1, high=3),
                SearchParam(field="method", values=("sgd", "m-arwp")),
                SearchParam(field="nesterov", values=(True, False), distribution=Distribution.CHOICE),
            ),
        ),
        concurrency=3,
        early_stopping=EarlyStopping(rungs=(1, 2), reduction_factor=2.0, min_validation_accuracy=0.15),
    )
    wire = spec.to_proto()
    assert (wire.concurrency, wire.n_trials, wire.search_seed, len(wire.params)) == (3, 12, 7, 4)
    assert SweepSpec.from_proto(wire) == spec
    assert SweepSpec.from_proto(GRID.to_proto()) == GRID, "a grid without early stopping"
    assert not GRID.to_proto().HasField("early_stopping") and not GRID.to_proto().HasField("n_trials")


def test_values_the_wire_cannot_carry_are_refused_by_name() -> None:
    with pytest.raises(InvalidArgument, match="concurrency"):
        dataclasses.replace(GRID, concurrency=-1).to_proto()
    with pytest.raises(InvalidArgument, match="sigma: value"):
        SweepSpec(base=BASE, search=Search(params=(SearchParam.grid("sigma", [None]),))).to_proto()  # type: ignore[list-item]


def _docs_example() -> str:
    docs = (REPO / "docs" / "tuning-sigma.md").read_text()
    match = re.search(r"```toml\n(name = .*?)```", docs, re.S)
    assert match, "docs/tuning-sigma.md has a whole sweep file"
    return match.group(1)


def test_the_sweep_file_of_the_docs_reads(tmp_path: Path) -> None:
    path = tmp_path / "sigma.toml"
    path.write_text(_docs_example())
    name, spec = SweepSpec.from_file(path)
    assert name == "sigma-x-seed"
    assert spec.concurrency == 2
    assert (spec.base.method, spec.base.model, spec.base.epochs, spec.base.batch_size) == (
        Method.M_ARWP, Model.SMALL_CNN, 30, 128,
    )
    assert spec.base.validation_fraction == 0.2
    assert spec.search.mode is SearchMode.GRID
    assert spec.search.params == (
        SearchParam(field="sigma", values=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3)),
        SearchParam(field="seed", values=(0, 1, 2)),
    )
    assert spec.early_stopping is None


SWEEP_FILE = """
name = "sigma"
concurrency = 2
method = "m-arwp"
model = "mlp"
epochs = 4
validation_fraction = 0.2

[search]
[[search.param]]
field = "sigma"
values = [0.003, 0.01, 0.03]

[early_stopping]
rungs = [1, 2]
"""


def test_a_sweep_file_with_early_stopping_and_its_mistakes_named() -> None:
    name, spec = SweepSpec.from_toml(SWEEP_FILE)
    assert name == "sigma"
    assert spec.early_stopping == EarlyStopping(rungs=(1, 2), reduction_factor=3.0)
    assert spec.base.epochs == 4 and spec.concurrency == 2

    def error(text: str) -> str:
        with pytest.raises(InvalidArgument) as info:
            SweepSpec.from_toml(text, origin="sweep.toml")
        return str(info.value)

    e = error(SWEEP_FILE.replace("epochs = 4", "epochz = 4"))
    assert "sweep.toml" in e and "epochz" in e, e
    e = error(SWEEP_FILE.replace("rungs = [1, 2]", "rungz = [1, 2]"))
    assert "[early_stopping]" in e and "rungz" in e, e
    e = error(SWEEP_FILE.replace("[search]\n", "[search]\nmodee = 'grid'\n"))
    assert "[search]" in e and "modee" in e, e
    e = error(SWEEP_FILE.replace('field = "sigma"', 'field = "sigma"\nvaluez = [1]'))
    assert "search.param[0]" in e and "valuez" in e, e
    e = error('method = "sgd"\nvalidation_fraction = 0.1\n')
    assert "[search]" in e, e
    e = error(SWEEP_FILE.replace("concurrency = 2", 'concurrency = "two"'))
    assert "concurrency" in e, e


# -- against the server ---------------------------------------------------------


def test_a_sigma_grid_runs_to_success_and_picks_the_best_by_validation_accuracy(client: Client) -> None:
    sweep = client.create_sweep(GRID, name="py-sigma")
    assert (sweep.name, sweep.state, sweep.done) == ("py-sigma", SweepState.RUNNING, False)
    assert sweep.spec == GRID, "the server stores the spec as created"
    assert [t.index for t in sweep.trials] == [0, 1, 2]
    assert [t.params for t in sweep.trials] == [{"sigma": s} for s in SIGMAS]

    snapshots = list(client.watch_sweep(sweep, timeout=120))
    assert snapshots and all(isinstance(s, Sweep) and s.id == sweep.id for s in snapshots)
    assert all(not s.done for s in snapshots[:-1]), "the watch ends at the terminal state"
    final = snapshots[-1]
    assert (final.state, final.done, final.succeeded, final.error) == (SweepState.SUCCEEDED, True, True, None)

    accuracies: dict[int, float] = {}
    for trial in final.trials:
        job = trial.job
        assert job is not None, f"trial {trial.index} ran"
        assert (job.sweep_id, job.sweep_trial, job.state) == (sweep.id, trial.index, JobState.SUCCEEDED)
        assert job.spec.sigma == SIGMAS[trial.index]
        assert job.last_evaluation is not None and job.last_evaluation.epoch == 2
        assert job.last_evaluation.validation_accuracy is not None
        accuracies[trial.index] = job.last_evaluation.validation_accuracy
        assert trial.validation_accuracy == accuracies[trial.index]
    best = final.best
    assert best is not None and best.index == final.best_trial
    assert accuracies[best.index] == max(accuracies.values()), accuracies

    got = client.get_sweep(sweep.id)
    assert (got.state, got.best_trial) == (SweepState.SUCCEEDED, final.best_trial)
    assert client.wait_sweep(sweep) == got, "wait returns at once for an ended sweep"
    assert sweep.id in [s.id for s in client.list_sweeps()]
    trial_jobs = {j.id for j in client.list() if j.sweep_id == sweep.id}
    assert trial_jobs == {t.job.id for t in final.trials if t.job is not None}
    assert client.cancel_sweep(sweep).state is SweepState.SUCCEEDED, "cancelling an ended sweep changes nothing"


def test_cancel_stops_the_running_trials_and_the_waiting_ones_never_start(client: Client) -> None:
    long = SweepSpec(
        base=dataclasses.replace(BASE, method=Method.SGD, epochs=200, batch_size=64),
        search=Search(params=(SearchParam.grid("lr", [0.05, 0.1, 0.2]),)),
    )
    sweep = client.create_sweep(long, name="py-cancel")
    cancelled = client.cancel_sweep(sweep.id)
    assert cancelled.state is SweepState.CANCELLED and cancelled.done and not cancelled.succeeded
    final = client.wait_sweep(sweep, timeout=60)
    assert final.state is SweepState.CANCELLED
    started = [t for t in final.trials if t.job is not None]
    assert len(started) <= 1, "concurrency 1: at most the first trial started"
    for trial in started:
        assert trial.job is not None
        assert client.get(trial.job.id).state is JobState.CANCELLED
    watched = list(client.watch_sweep(sweep, timeout=30))
    assert [s.state for s in watched] == [SweepState.CANCELLED], "a watch of an ended sweep yields it once"


def test_bad_sweeps_are_refused_naming_the_problem(client: Client) -> None:
    no_validation = dataclasses.replace(GRID, base=dataclasses.replace(BASE, validation_fraction=0.0))
    with pytest.raises(InvalidArgument, match="validation_fraction"):
        client.create_sweep(no_validation)
    unknown = dataclasses.replace(GRID, search=Search(params=(SearchParam.grid("sigmaa", [0.01]),)))
    with pytest.raises(InvalidArgument, match="sigmaa"):
        client.create_sweep(unknown)
    with pytest.raises(InvalidArgument, match="Model.TORCHSCRIPT"):
        client.create_sweep(GRID, model="net.pt")
    with pytest.raises(NotFound, match="sweep-missing"):
        client.get_sweep("sweep-missing")
    with pytest.raises(InvalidArgument, match="sweep"):
        client.get_sweep("")
