"""host_keys: numpy key derivations equal jax.random's, bit for bit."""

import jax
import numpy as np
import pytest

from tengri.inference import host_keys

SEEDS = [0, 1, 42, 12345, 2**31 + 7, 2**32 - 1, 2**32 + 5, 2**62 + 11]


@pytest.mark.parametrize("seed", SEEDS)
def test_prng_key_equals_jax_prng_key(seed):
    np.testing.assert_array_equal(host_keys.prng_key(seed), np.asarray(jax.random.PRNGKey(seed)))


@pytest.mark.parametrize("seed", SEEDS)
def test_split_pair_equals_jax_split(seed):
    key = jax.random.PRNGKey(seed)
    first, second = host_keys.split_pair(key)
    expected = np.asarray(jax.random.split(key))
    np.testing.assert_array_equal(first, expected[0])
    np.testing.assert_array_equal(second, expected[1])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("data", [0, 1, 2, 3, 17, 2**31, 2**32 - 1])
def test_fold_in_equals_jax_fold_in(seed, data):
    key = jax.random.PRNGKey(seed)
    np.testing.assert_array_equal(host_keys.fold_in(key, data),
                                  np.asarray(jax.random.fold_in(key, data)))


def test_typed_keys_go_through_jax_random():
    key = jax.random.key(3)
    first, second = host_keys.split_pair(key)
    expected = jax.random.split(key)
    assert jax.dtypes.issubdtype(first.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(second), jax.random.key_data(expected[1]))
    folded = host_keys.fold_in(key, 5)
    np.testing.assert_array_equal(jax.random.key_data(folded),
                                  jax.random.key_data(jax.random.fold_in(key, 5)))


def test_bad_seed_and_data_are_named():
    with pytest.raises(ValueError, match="seed"):
        host_keys.prng_key(-1)
    with pytest.raises(ValueError, match="data"):
        host_keys.fold_in(jax.random.PRNGKey(0), 2**32)
