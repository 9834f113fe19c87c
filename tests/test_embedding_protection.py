"""P's embedding protection (issue 14, item 4): noise P adds before ``[[z_B]]_E`` is formed.

* What E decrypts is ``clip(b + s·ξ, -1, 1)·W_B``, with ``ξ`` from P's own seed, fresh per
  step and identical for a repeated request at one step.
* Plaintext and encrypted modes draw the same noise and train the same model.
* The multiplier is part of the agreed parameters and of the job plan's fingerprint.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import tiny_training_inputs
from tests.secure_helpers import build_pair, refused_setup, settings
from vfl.config.job import PrivacyConfig
from vfl.config.plan import JobPlan
from vfl.protocol.embedding_noise import EmbeddingNoise
from vfl.protocol.options import Mode
from vfl.protocol.share_optim import ShareSgdConfig

SGD = ShareSgdConfig(lr=0.5, momentum=0.9)
NOISE = 0.5
# |Δz_B| from rounding b̃ to 2^-21 (docs/protocol.md): (d·max|W_B| + 1)·2^-21
ZB_TOL = 1e-5


def _embedding(pair, users: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """P's bottom output ``b`` for ``users`` (computed here only to check the protocol)."""
    idx = torch.as_tensor(users)
    with torch.no_grad():
        pair.server.bottom.eval()
        b = pair.server.bottom(pair.p.numeric[idx], pair.p.categorical[idx])
    return b.numpy().astype(np.float64)


def test_e_decrypts_the_noisy_embedding_times_w_b() -> None:
    # Prepare
    pair = build_pair(tiny_training_inputs(), e_settings=settings(embedding_noise=NOISE))
    pair.start()
    users = pair.batches(1)[0].users
    # Execute: an evaluation forward at step 5, the same request again, then at step 6
    z5 = pair.model.peer.forward(5, users, train=False)
    z5_again = pair.model.peer.forward(5, users, train=False)
    z6 = pair.model.peer.forward(6, users, train=False)
    b, w_b, noise = _embedding(pair, users), pair.w_b(), pair.server.share.noise
    pair.stop()
    # Assert: z_B is the clipped noisy b times W_B, within the fixed-point error ...
    noisy = np.clip(b + noise.draw(step=5, users=users, d=b.shape[1], train=False), -1, 1)
    np.testing.assert_allclose(z5, noisy @ w_b, atol=ZB_TOL)
    assert np.abs(z5 - b @ w_b).max() > 0.05  # ... and not the clean z_B
    # the same request at one step gets the same noise (nothing to average), a new step not
    np.testing.assert_allclose(z5_again, z5, atol=ZB_TOL)
    assert np.abs(z6 - z5).max() > 0.05


def test_noise_is_a_function_of_the_secret_seed_step_flag_and_user() -> None:
    users = np.array([3, 7, 11])
    a = EmbeddingNoise(0.5, seed=1).draw(step=4, users=users, d=5, train=True)
    # the same user gets the same noise in any batch; other seeds, steps, flags differ
    again = EmbeddingNoise(0.5, seed=1).draw(step=4, users=np.array([11, 3]), d=5, train=True)
    np.testing.assert_array_equal(again, a[[2, 0]])
    for other in (
        EmbeddingNoise(0.5, seed=2).draw(step=4, users=users, d=5, train=True),
        EmbeddingNoise(0.5, seed=1).draw(step=5, users=users, d=5, train=True),
        EmbeddingNoise(0.5, seed=1).draw(step=4, users=users, d=5, train=False),
    ):
        assert np.abs(other - a).min() > 0
    # calibrated: standard deviation = multiplier (in units of |b_i| < 1)
    big = EmbeddingNoise(0.5, seed=1).draw(step=0, users=np.arange(4000), d=4, train=True)
    assert abs(big.std() - 0.5) < 0.01 and abs(big.mean()) < 0.01
    # clipped to the layer's declared bound |b| <= 1
    out = EmbeddingNoise(3.0, seed=1).apply(
        np.zeros((50, 4)), step=0, users=np.arange(50), train=True
    )
    assert np.abs(out).max() <= 1.0 and (np.abs(out) == 1.0).any()
    with pytest.raises(ValueError, match="multiplier"):
        EmbeddingNoise(-0.1, seed=0)


def test_plaintext_and_encrypted_modes_train_the_same_model_with_the_noise_on() -> None:
    # Prepare: the same job with the noise on, encrypted and plaintext, and once without noise
    runs = {}
    for name, mode, noise in (
        ("encrypted", Mode.ENCRYPTED, NOISE),
        ("plaintext", Mode.PLAINTEXT, NOISE),
        ("no noise", Mode.PLAINTEXT, 0.0),
    ):
        pair = build_pair(
            tiny_training_inputs(),
            e_settings=settings(mode, SGD, embedding_noise=noise),
            allow=(True, True),
        )
        batches = pair.batches(12)
        # Execute
        pair.start()
        losses = [pair.model.train_step(step, batch) for step, batch in enumerate(batches)]
        z_eval = pair.model.peer.forward(99, batches[0].users, train=False)
        pair.stop()
        runs[name] = (np.array(losses), pair.w_b(), z_eval)
    # Assert: the two modes agree within the fixed-point error, and the noise mattered
    enc, plain, clean = runs["encrypted"], runs["plaintext"], runs["no noise"]
    np.testing.assert_allclose(enc[0], plain[0], atol=1e-5)
    np.testing.assert_allclose(enc[1], plain[1], atol=1e-5)
    np.testing.assert_allclose(enc[2], plain[2], atol=ZB_TOL)
    assert np.abs(clean[0] - plain[0]).max() > 1e-3


def test_a_different_noise_setting_stops_both_sides_naming_the_field() -> None:
    pair = build_pair(
        tiny_training_inputs(),
        e_settings=settings(embedding_noise=NOISE),
        p_settings=settings(embedding_noise=0.0),
        timeout=5,
    )
    at_e, at_p = refused_setup(pair)
    assert "embedding_noise: P has 0.0, E has 0.5" in str(at_e)
    assert "embedding_noise" in str(at_p[0])


def test_the_noise_is_part_of_the_job_plan_fingerprint() -> None:
    plain = JobPlan()
    noisy = JobPlan(privacy=PrivacyConfig(embedding_noise=NOISE))
    assert noisy.fields()["privacy.embedding_noise"] == NOISE
    assert plain.fields()["privacy.embedding_noise"] == 0.0
    assert plain.fingerprint() != noisy.fingerprint()


def test_the_pilot_writes_its_job_files_with_the_protection_on(tmp_path) -> None:
    from vfl.cli.pilot_cmd import PILOT_EMBEDDING_NOISE, _job_table
    from vfl.config.plan import JobPlan

    (tmp_path / "job.toml").write_text(
        '[job]\nname = "x"\n\n[parties]\nactive = "e"\npassive = "p"\n'
    )
    table = _job_table(tmp_path, {}, name="pilot", e="e.toml", p="p.toml")
    table.pop("parties")
    plan = JobPlan.model_validate(table)
    assert plan.privacy.embedding_noise == PILOT_EMBEDDING_NOISE > 0
    assert JobPlan().privacy.embedding_noise == 0.0  # the library default stays off
