from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedgpu.aggregation import CohortRecord, fedavg
from fedgpu.errors import ConfigError, ProtocolError, RewardsError
from fedgpu.models import MLP, ModelSpec
from fedgpu.rewards.payout import payout
from fedgpu.rewards.shapley import shapley
from fedgpu.rewards.utility import CohortGame, flatten_params, load_flat, noise_floor, zero_below_floor

SPEC = ModelSpec((8,), 3)
CENTERS = np.random.default_rng(99).normal(size=(3, 8)) * 1.5


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return (CENTERS[y] + rng.normal(size=(n, 8))).astype(np.float32), y


def factory() -> nn.Module:
    torch.manual_seed(0)
    return MLP(SPEC, hidden=16, depth=1)


def trained_delta(w: np.ndarray, seed: int, steps: int = 30) -> np.ndarray:
    """What an honest node sends: a few SGD steps on its own data, as a flat delta."""
    model = factory()
    load_flat(model, w)
    x, y = blobs(256, seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
        opt.step()
    return flatten_params(model) - w


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~50x faster than two fighting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup() -> dict[str, np.ndarray]:
    w = flatten_params(factory())
    vx, vy = blobs(500, 7)
    return {"w": w, "a": trained_delta(w, 1), "b": trained_delta(w, 2), "old": trained_delta(w, 3), "vx": vx, "vy": vy}


def loss_of(flat: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    model = factory()
    load_flat(model, flat)
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)))


def test_flat_round_trip() -> None:
    model = factory()
    flat = flatten_params(model) + 1.0
    load_flat(model, flat)
    np.testing.assert_allclose(flatten_params(model), flat, rtol=1e-6)


def test_utility_is_the_loss_drop_of_the_real_fedavg_model(setup: dict[str, np.ndarray]) -> None:
    w, a, b = setup["w"], setup["a"], setup["b"]
    base = 0.2 * setup["old"]
    # one candidate per coalition (the server's step, momentum 1); the empty coalition may take w or w + base
    game = CohortGame(factory, w, base, [3 * a, 2 * b], [3.0, 2.0], setup["vx"], setup["vy"], momenta=(1.0,), server_lr=1.5)
    avg = fedavg([CohortRecord(3 * a, 3.0), CohortRecord(2 * b, 2.0)])
    np.testing.assert_allclose(avg, (3 * a + 2 * b) / 5)
    along = base / np.linalg.norm(base)
    proj = lambda v: v - (v @ along) * along  # noqa: E731  the part along the last change is the server's
    beta = game.step(frozenset())[1]
    free = w + beta * base
    # the real model: the server's learning rate times FedAvg, without the part along the last change
    real_model = free + 1.5 * proj(avg)
    np.testing.assert_allclose(game.update(frozenset({0, 1})), real_model - w)
    # a coalition is the round's FedAvg with the cohorts outside it sending zeros: its step is its part of the sum
    np.testing.assert_allclose(game.update(frozenset({0})), 1.5 * proj(3 * a / 5) + beta * base)
    expected = loss_of(free, setup["vx"], setup["vy"]) - loss_of(real_model, setup["vx"], setup["vy"])
    assert math.isclose(game(frozenset({0, 1})), expected, abs_tol=1e-6)
    assert game(frozenset()) == 0.0


def test_helpful_positive_zero_update_null_or_harmful(setup: dict[str, np.ndarray]) -> None:
    w, a, b = setup["w"], setup["a"], setup["b"]
    zero = np.zeros_like(w)
    # cohort 2 sends zeros with no weight, cohort 3 zeros with weight (it shrinks every coalition's step
    # alike, so it changes no marginal contribution): both are exact null players
    game = CohortGame(factory, w, None, [3 * a, 3 * b, zero, zero], [3.0, 3.0, 0.0, 3.0], setup["vx"], setup["vy"])
    result = shapley(game.num_cohorts, game)
    floor = noise_floor(game)
    assert result.exact and game.forward_passes == 16  # each coalition once, plus the reference model
    assert math.isclose(result.values.sum(), game(frozenset(range(4))), abs_tol=1e-9)
    assert 0 < floor < result.values[0]
    assert result.values[0] > floor and result.values[1] > floor
    assert abs(result.values[2]) <= floor  # exactly 0 in fact: its zeros add nothing to any step
    assert result.values[2] == 0.0 and result.values[3] == 0.0
    rewards = payout(dict(enumerate(zero_below_floor(result.values, floor))), pool=100.0)
    assert rewards[2] == rewards[3] == 0.0 and math.isclose(rewards[0] + rewards[1], 100.0)


@pytest.mark.parametrize("momenta", [(0.0,), (0.0, 0.5, 1.0)])
def test_replaying_the_last_change_is_worth_what_zeros_are(setup: dict[str, np.ndarray], momenta: tuple) -> None:
    w, a, b = setup["w"], setup["a"], setup["b"]
    base = 0.5 * setup["old"]  # the last global change: a useful direction, but the server's for free
    values = {}
    for name, third in (("replay", 3 * base), ("zeros", np.zeros_like(w))):
        game = CohortGame(factory, w, base, [3 * a, 3 * b, third], [3.0, 3.0, 3.0], setup["vx"], setup["vy"], momenta=momenta)
        values[name] = shapley(3, game).values
        floor = noise_floor(game)
        assert values[name][0] > floor and values[name][1] > floor
        assert values[name][2] <= floor
        assert payout(dict(enumerate(zero_below_floor(values[name], floor))), pool=1.0)[2] == 0.0
    np.testing.assert_allclose(values["replay"], values["zeros"], atol=1e-6)


def test_replaying_the_change_since_a_task_rounds_ago_is_worth_what_zeros_are(setup: dict[str, np.ndarray]) -> None:
    """A node that sat rounds out replays the global change since its last task: the last change and the
    ones before it. Those are the server's for free too (``earlier_changes``): it is a null player, and a
    new direction (what honest nodes send) still counts."""
    w, a, b = setup["w"], setup["a"], setup["b"]
    base, before = 0.5 * setup["old"], 0.3 * setup["a"] + 0.2 * setup["b"]  # the last change, the one before it
    values = {}
    for name, third in (("replay", 3 * (base + before)), ("zeros", np.zeros_like(w))):
        game = CohortGame(factory, w, base, [3 * a, 3 * b, third], [3.0, 3.0, 3.0], setup["vx"], setup["vy"], earlier_changes=[before])
        values[name] = shapley(3, game).values
    np.testing.assert_allclose(values["replay"], values["zeros"], atol=1e-6)
    assert values["replay"][2] == 0.0
    without = CohortGame(factory, w, base, [3 * a, 3 * b, 3 * (base + before)], [3.0, 3.0, 3.0], setup["vx"], setup["vy"])
    assert shapley(3, without).values[2] != 0.0  # knowing only the last change, the replay is not a null player


def test_every_coalition_takes_the_servers_step_and_the_shipped_model_is_tuned(setup: dict[str, np.ndarray]) -> None:
    """A coalition chooses nothing: it takes the server's step and momentum, one pass each (the exact game
    over 3 cohorts costs 7 passes and the free step's choice of momentum 1.5). The shipped model then
    takes its coalition's best step *and* momentum of the whole grid: 9 candidates on the quarter."""
    w, a, b = setup["w"], setup["a"], setup["b"]
    base = 0.3 * setup["old"]
    game = CohortGame(factory, w, base, [3 * a, 3 * b, 3 * (a + b) / 2], [3.0, 3.0, 3.0], setup["vx"], setup["vy"], step_sizes=(0.5, 1.0, 2.0), momenta=(0.0, 0.5, 1.0))
    result = shapley(3, game)
    beta = game.step(frozenset())[1]
    assert all(game.step(frozenset(c)) == (1.0, beta) for c in ({0}, {1}, {2}, {0, 1}, {0, 2}, {1, 2}, {0, 1, 2}))
    assert result.exact and game.forward_passes == 8.5
    free = loss_of(w + beta * base, setup["vx"], setup["vy"])
    assert math.isclose(game(frozenset({0})), free - loss_of(w + game.update(frozenset({0})), setup["vx"], setup["vy"]), abs_tol=1e-6)
    # Shapley of a game whose steps add up: a cohort's value is near its share of the sum, the same
    # cohort sent by two parties is worth what the two halves are
    assert math.isclose(result.values.sum(), game(frozenset({0, 1, 2})), abs_tol=1e-9)
    grand = frozenset({0, 1, 2})
    eta, momentum = game.tune(grand)
    assert game.forward_passes == 10.75
    quarter = game._parts[0]
    shipped = lambda e, m: loss_of(w + game.update(grand, (e, m)), setup["vx"][quarter], setup["vy"][quarter])  # noqa: E731
    best = min(shipped(e, m) for e in (0.5, 1.0, 2.0) for m in (0.0, 0.5, 1.0))
    assert math.isclose(shipped(eta, momentum), best, rel_tol=1e-5) and best <= shipped(*game.step(grand))
    np.testing.assert_allclose(game.update(grand, (eta, momentum)), eta * game.server_step(grand) + momentum * base)


def test_a_cohort_does_not_stretch_its_step_to_hide_a_free_rider(setup: dict[str, np.ndarray]) -> None:
    """Two good updates plus a zero sender must be worth less than three good updates: if a coalition
    chose its own step it would stretch the shorter sum to match, and the free rider would look worth a third."""
    w, a, b = setup["w"], setup["a"], setup["b"]
    c = trained_delta(w, 4)
    three = CohortGame(factory, w, None, [a + b + c], [3.0], setup["vx"], setup["vy"], step_sizes=(0.5, 1.0, 2.0), server_lr=0.3)
    two = CohortGame(factory, w, None, [a + b + np.zeros_like(w)], [3.0], setup["vx"], setup["vy"], step_sizes=(0.5, 1.0, 2.0), server_lr=0.3)
    full, short = three(frozenset({0})), two(frozenset({0}))
    assert full > short + noise_floor(three) > 0
    assert math.isclose(short / full, 2 / 3, rel_tol=0.25)  # the step is short of a third: so is the gain, near enough


def test_without_a_cohort_the_shipped_model_does_not_go_on_along_a_change_that_hurts(setup: dict[str, np.ndarray]) -> None:
    w, a = setup["w"], setup["a"]
    base = -1.0 * a  # the last change undid a useful update: going on along it hurts
    game = CohortGame(factory, w, base, [a], [1.0], setup["vx"], setup["vy"], momenta=(0.0, 0.5, 1.0), momentum=1.0)
    assert game.step(frozenset()) == (0.0, 1.0)  # the game's free step is last round's momentum, for every coalition
    assert loss_of(w, setup["vx"], setup["vy"]) < min(loss_of(w + m * base, setup["vx"], setup["vy"]) for m in (0.5, 1.0))
    assert game.tune(frozenset()) == (0.0, 0.0)  # but the model shipped when no cohort is kept stays where it is
    assert not game.update(frozenset(), game.tune(frozenset())).any()


def test_a_small_validation_set_chooses_the_shipped_step_on_all_its_samples(setup: dict[str, np.ndarray]) -> None:
    w, a, b = setup["w"], setup["a"], setup["b"]
    x, y = setup["vx"][:300], setup["vy"][:300]  # below SMALL_VALIDATION: a quarter would be 75 samples
    game = CohortGame(factory, w, 0.3 * setup["old"], [a, b], [1.0, 1.0], x, y, step_sizes=(0.5, 1.0, 2.0), momenta=(0.0, 0.5, 1.0))
    grand = frozenset({0, 1})
    loss = {(e, m): loss_of(w + game.update(grand, (e, m)), x, y) for e in (0.5, 1.0, 2.0) for m in (0.0, 0.5, 1.0)}
    assert math.isclose(loss[game.tune(grand)], min(loss.values()), rel_tol=1e-5)
    assert game.forward_passes == 9  # the 9 candidates, each a whole pass (a quarter would count 9 / 4)


def test_a_restricted_game_is_the_game_of_its_cohorts_and_shares_the_free_step(setup: dict[str, np.ndarray]) -> None:
    w, a, b = setup["w"], setup["a"], setup["b"]
    base = 0.3 * setup["old"]
    kw = dict(step_sizes=(0.5, 1.0, 2.0), momenta=(0.0, 0.5, 1.0))
    full = CohortGame(factory, w, base, [a, -10 * b, b], [1.0, 1.0, 1.0], setup["vx"], setup["vy"], **kw)
    full(frozenset({0}))
    kept = full.restrict([0, 2])
    fresh = CohortGame(factory, w, base, [a, b], [1.0, 1.0], setup["vx"], setup["vy"], **kw)
    for c in ({0}, {1}, {0, 1}):
        assert kept(frozenset(c)) == pytest.approx(fresh(frozenset(c)), abs=1e-9)
    assert kept.forward_passes == fresh.forward_passes - 1.5  # the free step's momentum choice is not repeated
    np.testing.assert_allclose(kept.update(frozenset({0, 1})), fresh.update(frozenset({0, 1})))


def test_noise_floor_shrinks_with_more_validation_data(setup: dict[str, np.ndarray]) -> None:
    w, a = setup["w"], setup["a"]
    small = CohortGame(factory, w, None, [a], [1.0], setup["vx"][:50], setup["vy"][:50])
    large = CohortGame(factory, w, None, [a], [1.0], setup["vx"], setup["vy"])
    assert noise_floor(large) < noise_floor(small)


def test_diverged_coalition_stays_finite(setup: dict[str, np.ndarray]) -> None:
    w, a = setup["w"], setup["a"]
    boosted = np.full_like(w, 1e30)
    game = CohortGame(factory, w, None, [a, boosted], [1.0, 1.0], setup["vx"], setup["vy"])
    result = shapley(2, game)
    assert np.isfinite(result.values).all()
    assert result.values[1] < 0 < result.values[0]


def test_custom_aggregation_rule_is_used(setup: dict[str, np.ndarray]) -> None:
    w, a, b = setup["w"], setup["a"], setup["b"]
    seen: list[int] = []

    def first_cohort_only(cohorts):  # a stand-in for a robust rule over cohort means
        seen.append(len(cohorts))
        return np.asarray(cohorts[0].weighted) / cohorts[0].weight

    game = CohortGame(factory, w, None, [a, b], [1.0, 1.0], setup["vx"], setup["vy"], aggregate=first_cohort_only)
    assert math.isclose(game(frozenset({0, 1})), game(frozenset({0})), abs_tol=1e-12)
    assert seen == [2, 2]  # always every cohort's sum: those outside the coalition as zeros
    assert game(frozenset({1})) == 0.0  # the rule ignores cohort 1, so a coalition of it alone takes no step


def test_untrusted_cohort_sums_are_checked(setup: dict[str, np.ndarray]) -> None:
    w = setup["w"]
    bad = w.copy()
    bad[3] = np.nan
    with pytest.raises(ProtocolError, match="cohort 1"):
        CohortGame(factory, w, None, [w, bad], [1.0, 1.0], setup["vx"], setup["vy"])
    with pytest.raises(ProtocolError, match="shape"):
        CohortGame(factory, w, None, [w[:-1]], [1.0], setup["vx"], setup["vy"])
    with pytest.raises(ProtocolError, match="weight"):
        CohortGame(factory, w, None, [w], [-1.0], setup["vx"], setup["vy"])
    game = CohortGame(factory, w, None, [w], [1.0], setup["vx"], setup["vy"])
    with pytest.raises(RewardsError, match="outside"):
        game(frozenset({1}))


def test_models_with_buffers_are_refused(setup: dict[str, np.ndarray]) -> None:
    def with_batchnorm() -> nn.Module:
        return nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))

    with pytest.raises(ConfigError, match="buffers"):
        CohortGame(with_batchnorm, np.zeros(1), None, [], [], setup["vx"], setup["vy"])


def test_zero_below_floor() -> None:
    np.testing.assert_array_equal(zero_below_floor(np.array([0.5, -0.01, 0.02, -2.0]), 0.05), [0.5, 0.0, 0.0, -2.0])


def _overshooting_update() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1-feature problem with 30 % label noise (so the loss has a finite optimum along a direction),
    and an update that goes exactly twice as far as the optimum."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 1)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (rng.random(2000) < 0.3)).astype(np.int64)
    pattern = np.array([-1.0, 1.0, 0.0, 0.0])  # Linear(1, 2): weight (2x1) then bias (2)
    scales = np.linspace(0.05, 3.0, 60)
    losses = [float(nn.functional.cross_entropy(torch.tensor(x) @ torch.tensor([[-c, c]], dtype=torch.float32), torch.tensor(y))) for c in scales]
    best = float(scales[int(np.argmin(losses))])
    return x, y, 2 * best * pattern


@pytest.mark.parametrize("steps", [(1.0,), (0.5, 1.0)])
def test_a_zero_update_that_only_shrinks_the_average_earns_nothing(steps: tuple) -> None:
    x, y, d = _overshooting_update()
    make = lambda: nn.Linear(1, 2)  # noqa: E731
    w = np.zeros(4)
    # cohort 0: one honest node (weight 1) sending d; cohort 1: a node of the same weight sending zeros.
    # Its weight halves d's overshooting step in every coalition alike: a help that is credited to no one.
    game = CohortGame(make, w, None, [d, np.zeros(4)], [1.0, 1.0], x, y, step_sizes=steps)
    values = shapley(2, game, budget=256, rng=np.random.default_rng(0)).values
    assert values[1] == pytest.approx(0.0, abs=1e-9)
    assert values[0] > 0
    assert game.step(frozenset([0, 1])) == game.step(frozenset([0])) == (1.0, 0.0)
    np.testing.assert_allclose(game.update(frozenset([0])), d / 2)


def test_step_sizes_are_checked() -> None:
    x, y = blobs(10, 0)
    with pytest.raises(RewardsError, match="step_sizes"):
        w = flatten_params(factory())
        CohortGame(factory, w, None, [np.zeros_like(w)], [1.0], x, y, step_sizes=(0.0,))
