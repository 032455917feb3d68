"""`check`'s reference side: PyTorch outputs on an eval set laid out like Session.predict's."""

from __future__ import annotations

import numpy as np

from edgeseq.export.check import reference_outputs


def _tagger(arrays):
    """A fake per-step model: output (batch, steps, 2) = the input's running sum and the step index."""
    x = arrays[0]
    return [np.stack([np.cumsum(x, axis=1), np.broadcast_to(np.arange(x.shape[1]), x.shape)], -1).astype(np.float32)]


def test_per_step_references_come_back_at_the_padded_length_holding_each_last_step():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    lengths = np.array([4, 1, 2])  # the shortest group runs first: it set the shape, and longer ones crashed
    got = reference_outputs(_tagger, x, lengths)
    assert got.shape == (3, 4, 2)
    np.testing.assert_array_equal(got[0], _tagger([x[:1]])[0][0])
    np.testing.assert_array_equal(got[1, :, 0], [4, 4, 4, 4])  # its one step, held
    np.testing.assert_array_equal(got[2, :, 0], [8, 17, 17, 17])


def test_one_answer_per_sample_stays_one_per_sample():
    def classifier(arrays):
        return [arrays[0].sum(axis=1, keepdims=True)]

    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(reference_outputs(classifier, x, np.array([4, 1, 2]))[:, 0], [4, 1, 2])
