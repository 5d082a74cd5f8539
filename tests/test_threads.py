"""torch's threads on the CPU: the tuner's decisions, fed with known batch timings (no clocks),
and the policy a run follows (measured, the old fixed split, or a number)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from engine_helpers import heldout_cells, write_darkness_model

from napari_metastasis.errors import ModelError
from napari_metastasis.models import load_model
from napari_metastasis.models.loading import ForwardPool
from napari_metastasis.pipeline import inference as inference_module
from napari_metastasis.pipeline import make_grid, run_inference
from napari_metastasis.pipeline.reader import (
    THREADS_ENV_VAR,
    ThreadTuner,
    cpu_forward_threads,
    thread_candidates,
    thread_policy,
    torch_threads,
)
from napari_metastasis.slides.slide import Slide


def feed(tuner: ThreadTuner, rate_of, batches: int, patches: int = 64) -> list[int]:
    """Run ``batches`` batches through ``tuner``, each taking ``patches / rate_of(threads)`` s;
    the thread count each batch ran with."""
    used = []
    for _ in range(batches):
        threads = tuner.threads
        used.append(threads)
        tuner.record(patches, patches / rate_of(threads))
    return used


def test_candidates_are_all_cores_half_and_one():
    assert thread_candidates(1) == [1]
    assert thread_candidates(2) == [2, 1]
    assert thread_candidates(3) == [3, 1]
    assert thread_candidates(8) == [8, 4, 1]
    assert thread_candidates(0) == [1]


def test_a_forward_bound_run_gets_every_core():
    """Two threads twice as fast as one: after one probe of each, two are held."""
    tuner = ThreadTuner(2, probe_batches=2, probe_seconds=0, hold_batches=50)
    used = feed(tuner, {2: 140.0, 1: 70.0}.__getitem__, 1 + 4 + 20)
    assert used[:5] == [2, 2, 2, 1, 1]  # the run's first batch is not measured
    assert tuner.chosen == 2 and set(used[5:]) == {2}
    assert tuner.rates == {2: 140.0, 1: 70.0}


def test_a_loaded_machine_gets_one_thread():
    """Two threads collapse when other programs hold a core: one thread is kept."""
    tuner = ThreadTuner(2, probe_batches=2, probe_seconds=0, hold_batches=50)
    used = feed(tuner, {2: 25.0, 1: 60.0}.__getitem__, 1 + 4 + 20)
    assert tuner.chosen == 1 and set(used[5:]) == {1}


def test_the_tuner_probes_again_and_follows_the_load():
    """Held for ``hold_batches``, then probed again (the held count last): when the machine
    frees up the tuner moves to all cores."""
    tuner = ThreadTuner(2, probe_batches=1, probe_seconds=0, hold_batches=5)
    rates = {2: 25.0, 1: 60.0}
    feed(tuner, rates.__getitem__, 1 + 2)
    assert tuner.chosen == 1
    used = feed(tuner, rates.__getitem__, 5)
    assert used == [1] * 5 and tuner.probing
    assert tuner.threads == 2  # the challenger first
    rates[2] = 150.0  # the other programs finished
    feed(tuner, rates.__getitem__, 2)
    assert tuner.chosen == 2 and tuner.rounds == 2


def test_a_confirmed_choice_is_held_longer_and_a_small_gain_does_not_switch():
    tuner = ThreadTuner(2, probe_batches=1, probe_seconds=0, hold_batches=4, max_hold_batches=8)
    feed(tuner, {2: 100.0, 1: 60.0}.__getitem__, 1 + 2)
    assert tuner.chosen == 2
    # one thread 3 % faster than two: within the margin, two are kept, and held twice as long
    used = feed(tuner, {2: 100.0, 1: 103.0}.__getitem__, 4 + 2)
    assert tuner.chosen == 2 and used[4:] == [1, 2]
    used = feed(tuner, {2: 100.0, 1: 103.0}.__getitem__, 8 + 2)
    assert used[:8] == [2] * 8 and used[8:] == [1, 2]
    used = feed(tuner, {2: 100.0, 1: 103.0}.__getitem__, 8)  # capped at max_hold_batches
    assert used == [2] * 8 and tuner.probing


def test_a_clear_winner_is_held_four_times_longer():
    tuner = ThreadTuner(2, probe_batches=1, probe_seconds=0, hold_batches=4, max_hold_batches=64)
    rates = {2: 270.0, 1: 90.0}.__getitem__
    feed(tuner, rates, 1 + 2)  # the first round sets the hold to its base
    used = feed(tuner, rates, 4 + 2)  # confirmed, 3x faster: held 16 batches next
    assert used[4:] == [1, 2]
    used = feed(tuner, rates, 16 + 2)
    assert used[:16] == [2] * 16 and used[16:] == [1, 2]


def test_a_probe_lasts_long_enough_to_measure():
    """Fast batches (a read-bound model) are pooled until ``probe_seconds`` have passed."""
    tuner = ThreadTuner(2, probe_batches=2, probe_seconds=0.5)
    used = feed(tuner, {2: 640.0, 1: 6400.0}.__getitem__, 1 + 5 + 50)  # 0.1 s, then 0.01 s a batch
    assert used[1:6] == [2] * 5  # five batches of 0.1 s at two threads
    assert used[6 : 6 + 50] == [1] * 50
    assert tuner.chosen == 1


def test_each_run_starts_unmeasured():
    tuner = ThreadTuner(2, probe_batches=1, probe_seconds=0)
    tuner.record(64, 100.0)  # the first batch: readers starting, not counted
    assert tuner.threads == 2 and not tuner.rates
    tuner.record(64, 1.0)
    tuner.start_run()
    tuner.record(64, 100.0)
    assert tuner.probing and tuner.threads == 1
    tuner.record(64, 2.0)
    assert tuner.chosen == 2


def test_a_cheap_model_is_not_split():
    """A forward pass of under ``min_split_seconds`` a batch (a read-bound model): one thread
    from then on, without probes, however the batches' rates would compare."""
    tuner = ThreadTuner(2, probe_batches=1, probe_seconds=0, hold_batches=2)
    tuner.record(64, 0.02, forward_seconds=0.010)  # the first batch: warm-up, slow
    assert tuner.threads == 2 and not tuner.cheap
    tuner.record(64, 0.01, forward_seconds=0.002)  # 2 threads x 2 ms: 4 ms of one thread
    assert tuner.cheap and tuner.threads == 1
    for _ in range(20):
        tuner.record(64, 0.0001, forward_seconds=0.001)
        assert tuner.threads == 1 and not tuner.probing


def test_a_short_last_batch_does_not_make_a_model_cheap():
    tuner = ThreadTuner(2, probe_batches=1, probe_seconds=0)
    tuner.record(64, 0.5, forward_seconds=0.4)
    tuner.record(3, 0.02, forward_seconds=0.002)  # three patches: a run's last batch
    assert not tuner.cheap


def test_one_core_has_nothing_to_choose():
    tuner = ThreadTuner(1, probe_batches=1, probe_seconds=0)
    assert set(feed(tuner, lambda threads: 50.0, 10)) == {1}


@pytest.mark.parametrize(
    ("value", "policy"),
    [("", "auto"), ("auto", "auto"), (" AUTO ", "auto"), ("readers", "readers"), ("3", 3)],
)
def test_thread_policy(value, policy):
    assert thread_policy(value) == policy


@pytest.mark.parametrize("value", ["0", "-1", "many", "2.5"])
def test_a_bad_thread_policy_names_the_variable(value):
    with pytest.raises(ValueError, match=THREADS_ENV_VAR):
        thread_policy(value)


@pytest.fixture
def darkness(tmp_path):
    return load_model(write_darkness_model(tmp_path / "darkness", 32, spacing=1.0), device="cpu")


def _threads_per_batch(model, monkeypatch, svs_file) -> list[int]:
    """Per batch of a run: the threads its forward pass ran on (parts of the batch in a
    ForwardPool, each on one torch thread; else torch's count)."""
    seen: list[int] = []
    forward = model.forward

    def counting(x, pool=None):
        seen.append(pool.width if pool is not None else torch.get_num_threads())
        if pool is not None:
            assert torch.get_num_threads() == 1  # the consumer's resize: one thread
        return forward(x, pool)

    monkeypatch.setattr(model, "forward", counting)
    with Slide(svs_file) as slide:
        grid = make_grid(slide, model)
        cells = grid.all_cells()[:320]
        n = sum(len(b.cells) for b in run_inference(slide, model, cells, grid, batch_size=32))
    assert n == len(cells)
    return seen


def test_a_cpu_run_follows_its_models_tuner(darkness, monkeypatch, svs_file):
    """By default each batch is split into as many parts as the model's tuner names, and the
    tuner carries over from one run to the next."""
    monkeypatch.delenv(THREADS_ENV_VAR, raising=False)
    # (the darkness model is cheap enough to run unsplit; here the tuner is told to split it)
    tuner = ThreadTuner(4, probe_batches=1, probe_seconds=0, hold_batches=100, min_split_seconds=0)
    named: list[int] = []
    record = tuner.record

    def recording(*args):
        record(*args)
        named.append(tuner.threads)

    monkeypatch.setattr(tuner, "record", recording)
    monkeypatch.setitem(inference_module._TUNERS, darkness, tuner)
    before = torch.get_num_threads()
    seen = _threads_per_batch(darkness, monkeypatch, svs_file)
    assert len(seen) == 10
    assert seen == [4, *named[:-1]]  # each batch with what the tuner said after the last one
    assert seen[1:4] == [4, 2, 1]  # the first batch is not measured; then one probe each
    assert tuner.chosen in (4, 2, 1) and set(seen[4:]) == {tuner.chosen}
    assert torch.get_num_threads() == before
    again = _threads_per_batch(darkness, monkeypatch, svs_file)[
        1:
    ]  # the same tuner: no new probe round
    assert set(again) == {tuner.chosen}
    assert inference_module.thread_tuner(darkness) is tuner


def test_a_cheap_model_runs_unsplit(darkness, monkeypatch, svs_file):
    """A forward pass shorter than the tuner's split limit: once a batch has shown it (the first
    is slowed by warm-up), every batch runs whole, on one thread. The limit is raised here so that
    a busy machine (the darkness model takes ~1 ms a batch on a quiet one, 5+ ms with the cores
    taken) cannot make it look expensive; the tuner's own timings are tested above."""
    monkeypatch.delenv(THREADS_ENV_VAR, raising=False)
    tuner = inference_module.thread_tuner(darkness, fresh=True)
    tuner.min_split_seconds = 10.0
    seen = _threads_per_batch(darkness, monkeypatch, svs_file)
    assert seen[0] == max(tuner.candidates)
    assert seen[2:] == [1] * (len(seen) - 2)
    assert inference_module.thread_tuner(darkness).cheap


def test_the_old_split_and_a_fixed_count_can_be_asked_for(darkness, monkeypatch, svs_file):
    monkeypatch.setenv(THREADS_ENV_VAR, "readers")
    assert set(_threads_per_batch(darkness, monkeypatch, svs_file)) == {cpu_forward_threads()}
    monkeypatch.setenv(THREADS_ENV_VAR, "3")
    assert set(_threads_per_batch(darkness, monkeypatch, svs_file)) == {3}
    monkeypatch.setenv(THREADS_ENV_VAR, "lots")
    with pytest.raises(ValueError, match=THREADS_ENV_VAR):
        _threads_per_batch(darkness, monkeypatch, svs_file)


def test_a_batch_split_over_threads_gives_the_same_probabilities():
    """The bundled model on held-out patches: a batch run in 1, 2, 3 or 4 parts (one torch
    thread each) gives every patch the same probability as the whole batch in one call."""
    model = load_model("default", device="cpu")
    patches = heldout_cells(100)
    x = model.prepare(patches)
    whole = model.forward(x).numpy()
    assert whole[:, 1].min() < 0.2 and whole[:, 1].max() > 0.9  # tumour and normal tissue
    for width in (1, 2, 3, 4):
        with ForwardPool(4) as pool:
            pool.width = width
            np.testing.assert_allclose(model.forward(x, pool).numpy(), whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("n", "width", "parts"), [(64, 2, 4), (100, 3, 7), (5, 4, 4), (1, 2, 1)])
def test_a_batch_is_cut_into_small_parts_run_by_width_threads(n, width, parts):
    """Parts of at most ``part_size`` patches (and at least one per thread), in order; no more
    than ``width`` threads run them, each on one torch thread."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1)
    seen: set[str] = set()
    lock = threading.Lock()

    def run(part):
        with lock:
            seen.add(threading.current_thread().name)
        assert torch.get_num_threads() == 1
        time.sleep(0.01)  # long enough for every idle thread to take a part if it could
        return part * 2

    with ForwardPool(4, part_size=16) as pool:
        pool.width = width
        cut = pool.parts(x)
        assert len(cut) == parts and max(len(c) for c in cut) <= 16
        with torch_threads(1):
            out = torch.cat(pool.map(run, cut))
    assert torch.equal(out, x * 2)
    assert len(seen) <= width


def test_a_network_that_answers_wrongly_is_refused_in_parts_too(tmp_path):
    """The shape check sees what the parts give, not a concatenation error."""
    model = load_model(write_darkness_model(tmp_path / "d", 32, spacing=1.0), device="cpu")
    model.module = lambda x: torch.zeros(3, 2)  # three rows whatever the batch
    with ForwardPool(2) as pool, pytest.raises(ModelError, match="one row of 2 values per patch"):
        model.forward(torch.zeros(8, 3, 32, 32), pool)
    model.module = lambda x: torch.tensor(1.0)  # a scalar
    with ForwardPool(2) as pool, pytest.raises(ModelError, match="returned"):
        model.forward(torch.zeros(8, 3, 32, 32), pool)


def test_tuned_and_fixed_runs_give_the_same_probabilities(darkness, monkeypatch, svs_file):
    """The thread count changes how fast, never what: every patch's probability is the same."""
    results = {}
    for policy in ("auto", "1"):
        monkeypatch.setenv(THREADS_ENV_VAR, policy)
        with Slide(svs_file) as slide:
            grid = make_grid(slide, darkness)
            cells = grid.all_cells()[:320]
            batches = list(run_inference(slide, darkness, cells, grid, batch_size=32))
        cells_out = np.concatenate([b.cells for b in batches])
        order = np.lexsort(cells_out.T[::-1])
        results[policy] = np.concatenate([b.positive for b in batches])[order]
    np.testing.assert_allclose(results["auto"], results["1"], atol=1e-6)
