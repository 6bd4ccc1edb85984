import numpy as np
import pytest

from sim.kv_cache import KVCache


def test_allocate_rounds_up_to_blocks_and_frees():
    kv = KVCache(num_blocks=10, block_size_tokens=16, num_requests=3)
    assert kv.allocate(0, 1)
    assert kv.held_blocks(0) == 1
    assert kv.allocate(0, 17)  # grows to two blocks
    assert kv.held_blocks(0) == 2 and kv.num_free_blocks == 8
    assert kv.allocate(0, 5)  # shrinking requests never give blocks back implicitly
    assert kv.held_blocks(0) == 2
    kv.free(0)
    assert kv.num_free_blocks == 10 and kv.held_blocks(0) == 0


def test_allocate_is_all_or_nothing():
    kv = KVCache(num_blocks=4, block_size_tokens=16, num_requests=2)
    assert kv.allocate(0, 48)  # 3 blocks
    assert not kv.allocate(1, 32)  # needs 2, only 1 free
    assert kv.held_blocks(1) == 0 and kv.num_free_blocks == 1
    assert kv.can_allocate(1, 16) and not kv.can_allocate(1, 17)


def test_allocate_many_all_or_nothing():
    kv = KVCache(num_blocks=5, block_size_tokens=10, num_requests=3)
    reqs = np.array([0, 1, 2])
    assert not kv.allocate_many(reqs, np.array([20, 20, 20]))  # 6 blocks > 5
    assert kv.num_free_blocks == 5
    assert kv.allocate_many(reqs, np.array([20, 10, 10]))
    assert kv.num_used_blocks == 4
    kv.free_many(reqs[:2])
    assert kv.num_used_blocks == 1


@pytest.mark.parametrize("horizon", [1, 5, 40])
def test_steps_that_fit_matches_step_by_step(horizon):
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 6))
        kv = KVCache(num_blocks=int(rng.integers(5, 30)), block_size_tokens=4, num_requests=n)
        tokens_now = rng.integers(1, 20, size=n)
        steps_left = rng.integers(1, 30, size=n)
        got = kv.steps_that_fit(np.arange(n), tokens_now, steps_left, 1, horizon)
        # brute force: step i needs blocks for tokens_now + i for every request still running
        expect = 0
        for i in range(horizon):
            need = sum(-(-(tokens_now[j] + i) // 4) for j in range(n) if i < steps_left[j])
            if need > kv.num_blocks:
                break
            expect = i + 1
        assert got == expect


def test_rejects_empty_pool():
    with pytest.raises(ValueError):
        KVCache(0, 16, 1)
