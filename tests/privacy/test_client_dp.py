"""Client-level DP: clipping bounds the joint norm, k noise shares sum to the full noise, accounting is Opacus's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedgpu.errors import ConfigError
from fedgpu.privacy.client_dp import add_share_of_noise, client_level_epsilon, clip_update, noise_share_std, update_norm
from fedgpu.privacy.dp import epsilon_of


def test_clip_update_bounds_the_joint_norm_and_reports_the_original() -> None:
    flat = np.full(400, 0.5, np.float32)  # norm 10
    clipped, norm = clip_update(flat, 2.0)
    assert norm == pytest.approx(10.0) and update_norm(clipped) == pytest.approx(2.0, rel=1e-6)
    assert clipped.dtype == np.float32
    small, _ = clip_update(flat * 0.01, 2.0)
    np.testing.assert_array_equal(small, flat * 0.01)  # below the bound: unchanged
    tensors = {"w": torch.full((10, 10), 1.0), "b": torch.full((21,), 1.0), "n": torch.tensor([3])}
    clipped_t, norm_t = clip_update(tensors, 1.0)
    assert norm_t == pytest.approx(11.0) and update_norm(clipped_t) == pytest.approx(1.0, rel=1e-6)
    assert torch.equal(clipped_t["n"], torch.tensor([3]))  # integer buffers are not scaled


def test_k_shares_sum_to_the_full_noise() -> None:
    z, c, k = 1.5, 0.5, 16
    total = sum(add_share_of_noise(np.zeros(50_000), c, z, k, np.random.default_rng(i)) for i in range(k))
    assert float(np.std(total)) == pytest.approx(z * c, rel=0.02)
    assert noise_share_std(c, z, k) == pytest.approx(z * c / 4)
    one = add_share_of_noise({"w": torch.zeros(50_000)}, c, z, k, torch.Generator().manual_seed(0))
    assert float(one["w"].std()) == pytest.approx(z * c / 4, rel=0.03)


def test_bad_client_dp_settings_raise_config_errors() -> None:
    with pytest.raises(ConfigError):
        add_share_of_noise(np.zeros(3), 1.0, 1.0, 0, np.random.default_rng())
    with pytest.raises(ConfigError):
        clip_update(np.array([np.nan]), 1.0)
    with pytest.raises(ConfigError):
        client_level_epsilon(1.0, 1.5, 10, 1e-5)


def test_client_level_epsilon_is_opacus_on_the_rounds() -> None:
    assert client_level_epsilon(1.2, 0.01, 500, 1e-5) == epsilon_of([(1.2, 0.01, 500)], 1e-5, "rdp")
    # every node in every round (no sampling): ten rounds at z = 1 is far from private
    assert client_level_epsilon(1.0, 1.0, 10, 1e-5) > 10
