"""The numeric building blocks: the decoding fast paths agree with the general ones."""

from __future__ import annotations

import numpy as np

from assistant.core.ops import Rope, rms_norm


def test_single_row_rms_norm_matches_the_batched_one():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 576)).astype(np.float32)
    w = rng.standard_normal(576).astype(np.float32)
    batched = rms_norm(x, w, 1e-5)
    for i in range(5):
        one = rms_norm(x[i:i + 1], w, 1e-5)
        assert one.dtype == np.float32
        np.testing.assert_allclose(one[0], batched[i], rtol=2e-6, atol=2e-6)


def test_rotation_matrix_path_matches_elementwise_rope():
    """Decoding rotates one row per head with a cached rotation matrix; prefill rotates
    elementwise. Both must agree, with partial rotary dims left alone."""
    rng = np.random.default_rng(2)
    for head_dim, n_rot in ((64, 64), (128, 64)):
        rope = Rope(head_dim, n_rot, 10000.0)
        x = rng.standard_normal((6, 40, head_dim)).astype(np.float32)
        whole = rope.apply(x.copy(), 100)  # elementwise: positions 100 .. 139
        for t in (0, 17, 39):
            one = rope.apply(x[:, t:t + 1].copy(), 100 + t)  # matrix path
            np.testing.assert_allclose(one[:, 0], whole[:, t], rtol=1e-5, atol=1e-5)
        same = rope.apply(x[:, :3].copy(), 120, same_position=True)  # parallel rows at one position
        np.testing.assert_allclose(same[:, 2], rope.apply(x[:, 2:3].copy(), 120)[:, 0], rtol=1e-6, atol=1e-6)
