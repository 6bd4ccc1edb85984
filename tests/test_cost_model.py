"""The roofline cost model: physical behaviour, and its three entry points agree."""
import numpy as np
import pytest

from sim.catalog import resolve_gpu, resolve_model
from sim.configio import ConfigError
from sim.cost_model import ProfileCostModel, RooflineCostModel
from sim.step_features import PLAIN_SUMS_MAX, price, step_feature_sums, step_feature_values, step_features


def roofline(model="llama-3.1-8b", gpu="h100-sxm", tp=1, w="bf16", kv="bf16"):
    return RooflineCostModel(resolve_model(model, "m"), resolve_gpu(gpu, "g"), tp=tp, weight_dtype=w, kv_dtype=kv)


@pytest.mark.parametrize("model, tp", [("llama-3.1-8b", 1), ("llama-3.1-70b", 4), ("mixtral-8x7b", 2)])
def test_scalar_vector_and_decode_forms_agree(model, tp):
    cm = roofline(model, tp=tp)
    B = np.array([1, 8, 64, 256])
    ctx = np.array([100, 8_000, 60_000, 500_000])
    full = cm.step_times_s(B, B, ctx, ctx, B)
    np.testing.assert_allclose(cm.decode_step_times_s(B, ctx), full, rtol=1e-12)
    for i in range(len(B)):
        assert cm.step_time_s(int(B[i]), int(B[i]), int(ctx[i]), int(ctx[i]), int(B[i])) == pytest.approx(full[i], rel=1e-12)


def test_decode_is_weight_bound_at_small_batch_and_grows_with_batch_and_context():
    cm = roofline()
    t1, t8 = cm.decode_step_times_s(np.array([1, 8]), np.array([1000, 8000]))
    assert t8 < 1.3 * t1  # streaming 16 GB of weights dominates a small batch
    big = cm.decode_step_times_s(np.array([256, 256]), np.array([256 * 1000, 256 * 4000]))
    assert big[1] > big[0] > t8


def test_prefill_attention_is_quadratic_and_tp_helps():
    cm1, cm2 = roofline(tp=1), roofline(tp=2)
    f = step_features(np.array([8000]), np.array([0]), np.array([1]))
    g = step_features(np.array([4000]), np.array([0]), np.array([1]))
    assert f.attn_pairs == 8000 * 8001 // 2
    assert price(cm1, f) > 2 * price(cm1, g) * 0.99
    assert price(cm2, f) < 0.7 * price(cm1, f)


def test_fp8_speeds_up_h100_and_is_refused_on_a100():
    f = step_features(np.array([4096]), np.array([0]), np.array([1]))
    assert price(roofline(w="fp8"), f) < 0.7 * price(roofline(), f)
    with pytest.raises(ConfigError, match="a100-80gb-sxm has no fp8"):
        roofline(gpu="a100-80gb-sxm", w="fp8")


def test_moe_reads_only_touched_experts():
    cm = roofline("mixtral-8x7b", tp=2)
    one, many = cm.decode_step_times_s(np.array([1, 64]), np.array([500, 500 * 64]))
    assert many > 1.5 * one  # a batch touches most experts; one token only 2 of 8


def test_profile_formula():
    c = {"overhead_s": 0.001, "per_seq_s": 1e-5, "weights_s": 0.004, "per_token_s": 1e-5, "per_pair_s": 1e-9,
         "per_kv_token_s": 1e-8, "per_sample_s": 2e-6}
    cm = ProfileCostModel(c)
    # 10 decode tokens: weight floor (0.004) beats 10 * 1e-5
    t = cm.step_time_s(10, 10, 10_000, 10_000, 10)
    assert t == pytest.approx(0.001 + 1e-4 + 0.004 + 1e-5 + 1e-4 + 2e-5)
    with pytest.raises(ValueError, match="missing"):
        ProfileCostModel({"overhead_s": 1.0})


@pytest.mark.parametrize("host_per_seq_s,overlap", [(0.0, False), (2e-4, False), (0.0, True)])
def test_profile_scalar_and_decode_forms_are_bit_identical_to_the_array_form(host_per_seq_s, overlap):
    """The engine prices step 0 with step_time_s (floats) and fast-forwards with decode_step_times_s:
    both must give exactly the array formula's numbers, or runs would depend on which path priced a step."""
    from sim.cost_model import ServingOverhead

    c = {"overhead_s": 0.0013, "per_seq_s": 1.7e-5, "weights_s": 0.0041, "per_token_s": 3.3e-6,
         "per_pair_s": 1.1e-10, "per_kv_token_s": 7.9e-9, "per_sample_s": 2.3e-6}
    # Overlapped: an engine step long enough that it, not the kernels, sets some of these steps.
    cm = ProfileCostModel(c, ServingOverhead(compute_scale=1.07, step_overhead_s=8e-3 if overlap else 3e-4,
                                             per_seq_overhead_s=4e-6, host_per_seq_s=host_per_seq_s,
                                             overlap=overlap, exposed_step_s=2e-4 if overlap else 0.0))
    rng = np.random.default_rng(0)
    B = rng.integers(1, 512, 300)
    ctx = B * rng.integers(1, 8000, 300)
    T = B + rng.integers(0, 4096, 300)
    pairs = ctx * rng.integers(1, 50, 300)
    full = cm.step_times_s(T, B, pairs, ctx, B)
    assert [cm.step_time_s(int(T[i]), int(B[i]), int(pairs[i]), int(ctx[i]), int(B[i])) for i in range(300)] \
        == full.tolist()
    assert cm.decode_step_times_s(B, ctx).tolist() == cm.step_times_s(B, B, ctx, ctx, B).tolist()
    if host_per_seq_s:  # the host floor binds somewhere in this sample, so both branches are checked
        assert (full == host_per_seq_s * B).any() and (full > host_per_seq_s * B).any()
    if overlap:  # both sides of the max bind somewhere in this sample
        engine = 2e-4 + 8e-3 + 4e-6 * B
        assert (full == engine).any() and (full > engine).any()


@pytest.mark.parametrize("n", [1, 5, PLAIN_SUMS_MAX, PLAIN_SUMS_MAX + 1, 200])  # both sides of the switch
def test_step_features_count_each_sequence_the_same_either_way(n):
    """The loop over plain integers (a few sequences) and the numpy form (many) give the same
    features, equal to counting each sequence's query-key pairs one by one."""
    rng = np.random.default_rng(n)
    chunk = rng.integers(0, 600, n)
    ctx = rng.integers(0, 5000, n)
    samples = rng.integers(0, 3, n)
    pairs = sum(sum(int(c) + q + 1 for q in range(int(L))) for L, c in zip(chunk, ctx))  # causal: query q sees c+q+1
    expected = (int(chunk.sum()), int(samples.sum()), pairs, int(ctx.sum() + chunk.sum()), int(np.count_nonzero(chunk)))
    assert step_feature_values(chunk, ctx, samples) == expected
    assert step_feature_sums(chunk.tolist(), ctx.tolist()) == (expected[0], expected[2], expected[3])


@pytest.mark.parametrize("form", ["roofline", "roofline_tp2", "profile", "profile_host_floor", "profile_overlap",
                                  "profile_experts"])
def test_decode_steps_scalar_gives_the_array_form_bit_for_bit(form):
    """The engine prices a short run of decode steps a few at a time with decode_steps_scalar, a long one
    with decode_step_times_s: every step must have the same bits either way (or a run would depend on
    which path priced it); a form without a scalar twin says None."""
    from sim.cost_model import ServingOverhead

    if form.startswith("roofline"):
        cm = roofline("llama-2-70b" if form.endswith("tp2") else "llama-3.1-8b", "a100-80gb-sxm",
                      tp=2 if form.endswith("tp2") else 1)
    else:
        c = {"overhead_s": 0.0013, "per_seq_s": 1.7e-5, "weights_s": 0.0041, "per_token_s": 3.3e-6,
             "per_pair_s": 1.1e-10, "per_kv_token_s": 7.9e-9, "per_sample_s": 2.3e-6}
        if form.endswith("experts"):
            c |= {"experts_s": 0.002, "expert_pick_fraction": 0.25}
        overlap = form.endswith("overlap")
        # Host floor and overlap: long enough that they, not the kernels, set some of these steps.
        cm = ProfileCostModel(c, ServingOverhead(compute_scale=1.07, step_overhead_s=6.5e-3 if overlap else 3e-4,
                                                 per_seq_overhead_s=4e-6, overlap=overlap,
                                                 exposed_step_s=2e-4 if overlap else 0.0,
                                                 host_per_seq_s=4e-4 if form.endswith("floor") else 0.0))
    steps_s = cm.decode_steps_scalar()
    if form == "profile_experts":
        assert steps_s is None
        return
    rng = np.random.default_rng(1)
    floors = set()  # overlap: did the engine's floor set the first step of a call (else no step of it)?
    for B, first, count in zip(rng.integers(1, 25, 200).tolist(), rng.integers(1, 60_000, 200).tolist(),
                               rng.integers(1, 40, 200).tolist()):
        ctx = first + B * np.arange(count)
        scalar = np.array(steps_s(B, first, count))
        assert len(scalar) == count
        assert scalar.tobytes() == np.asarray(cm.decode_step_times_s(np.full(count, B), ctx), dtype=np.float64).tobytes()
        if form == "profile_overlap":
            floors.add(bool(scalar[0] == cm._exposed_step_s + (cm._engine_step_s + cm._engine_per_seq_s * float(B))))
    if form == "profile_overlap":  # both forms of steps_general_s ran: the floor under every step, and not
        assert floors == {True, False}


def test_a_mixture_of_experts_has_no_scalar_decode_steps():
    cm = roofline("mixtral-8x7b", tp=2)
    assert cm.model.is_moe and cm.decode_steps_scalar() is None
