"""Who sees what (SPEC §4 table), checked on every message each party receives.

A recorder captures every message E and P receive during encrypted training and scoring.
Each field is classified -- public key, agreed parameters, user positions, a ciphertext the
receiver cannot open, or a ciphertext it can open -- and everything a party can read in the
clear is compared with the values that party must never see.

| value                                   | E     | P     |
|-----------------------------------------|-------|-------|
| P's features, ``b``, ``V``              | never | yes   |
| E's features, labels, ``e``, ``U``,     |       |       |
| ``δ``, predictions                      | yes   | never |
| ``W_B``                                 | never | never |
| ``z_B``                                 | yes   | never |
| ``dL/db``                               | never | yes   |
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tests.helpers import tiny_training_inputs
from tests.secure_helpers import (
    CFG,
    TEST_FLOOR,
    Pair,
    build_pair,
    keys,
    reference_run,
    settings,
)
from vfl.crypto.paillier import EncryptedVector, KeyMismatchError
from vfl.protocol.ciphers import PaillierCipher
from vfl.protocol.fixed_point import SecureScales
from vfl.protocol.messages import (
    SecureBackwardIns,
    SecureBackwardRes,
    SecureForwardIns,
    SecureForwardRes,
    SetupIns,
    SetupRes,
    Shutdown,
)
from vfl.protocol.share_optim import ShareSgdConfig

SGD = ShareSgdConfig(lr=0.5, momentum=0.9)
SCALES = SecureScales()
STEPS = 5

# (message, field) -> what the receiving party finds there
E_RECEIVES = {
    (SetupRes, "cipher"): "cipher suite of P's key",
    (SetupRes, "public_key"): "P's public key",
    (SetupRes, "params"): "agreed parameters",
    (SetupRes, "enc_init"): "opens: masked initial share U0 = W_B(0) - M",
    (SecureForwardRes, "enc_zb"): "opens: z_B",
    (SecureForwardRes, "enc_v"): "sealed under P's key",
    (SecureBackwardRes, "enc_ge"): "opens: masked gradient share",
}
P_RECEIVES = {
    (SetupIns, "cipher"): "cipher suite of E's key",
    (SetupIns, "public_key"): "E's public key",
    (SetupIns, "params"): "agreed parameters",
    (SetupIns, "enc_init"): "sealed under E's key",
    (SecureForwardIns, "users"): "user positions",
    (SecureForwardIns, "train"): "flag",
    (SecureForwardIns, "enc_u"): "sealed under E's key",
    (SecureBackwardIns, "enc_g"): "sealed under E's key",
    (SecureBackwardIns, "enc_db"): "opens: dL/db",
}


@pytest.fixture(scope="module")
def run() -> tuple[Pair, dict]:
    pair = build_pair(tiny_training_inputs(), e_settings=settings(sgd=SGD))
    batches = pair.batches(STEPS)
    truth = reference_run(pair, batches, SGD)
    pair.start()
    truth["pred"] = []
    for step, batch in enumerate(batches):
        pair.model.train_step(step, batch)
    items = np.arange(6).reshape(1, 6).repeat(len(batches[0].users), 0)
    truth["pred"].append(pair.model.predict(STEPS, batches[0].users, items))
    pair.stop()
    truth["batches"] = batches
    return pair, truth


def _opener(party: str) -> PaillierCipher:
    kp = keys(party)
    return PaillierCipher(kp.public_key, SCALES, private_key=kp.private_key)


def _sealed_only_for(data: bytes, owner: str, reader: str) -> bool:
    """``data`` is a ciphertext under ``owner``'s key and does not parse under ``reader``'s."""
    EncryptedVector.deserialise(data, keys(owner).public_key)
    with pytest.raises(KeyMismatchError):
        EncryptedVector.deserialise(data, keys(reader).public_key)
    return True


def _fields(messages: list[object]) -> set[tuple[type, str]]:
    return {
        (type(m), f.name)
        for m in messages
        if not isinstance(m, Shutdown)
        for f in dataclasses.fields(m)  # type: ignore[arg-type]
        if f.name != "step"
    }


def test_every_field_each_party_receives_is_one_of_the_table(run) -> None:
    pair, _ = run
    # Assert: exactly the fields of the table reach each party, nothing else
    assert _fields(pair.e_rec.received) == set(E_RECEIVES)
    assert _fields(pair.p_rec.received) == set(P_RECEIVES)
    assert not pair.e_rec.undecodable and not pair.p_rec.undecodable
    for m in pair.e_rec.received:  # E never receives a plain array of any kind
        assert not any(isinstance(getattr(m, f.name), np.ndarray) for f in dataclasses.fields(m))
    (setup_res,) = pair.e_rec.of_type(SetupRes)
    assert setup_res.public_key == keys("P").public_key.to_bytes()
    (setup_ins,) = pair.p_rec.of_type(SetupIns)
    assert setup_ins.public_key == keys("E").public_key.to_bytes()
    for params in (setup_res.params, setup_ins.params):
        assert set(json.loads(params)) == set(pair.model.peer.share.params())
        assert json.loads(params)["cipher"] == "paillier"
    assert setup_res.cipher == setup_ins.cipher == "paillier"


def test_what_e_receives(run) -> None:
    pair, truth = run
    opener = _opener("E")
    h = CFG.interactive_out
    (setup,) = pair.e_rec.of_type(SetupRes)  # [[W_B(0)ᵀ - Mᵀ]]_E: masked 2^30 times over
    vec = opener.load(setup.enc_init, rows=h, length=CFG.passive_out, what="U0")
    u0 = opener.decrypt(vec, CFG.passive_out).astype(float)
    assert np.abs(u0).min() > 2.0**30 * np.abs(truth["w_b"][0]).max() * 2.0**SCALES.w_bits
    train_fwd = [m for m in pair.e_rec.of_type(SecureForwardRes) if m.enc_v]
    assert len(train_fwd) == STEPS
    for step, res in enumerate(train_fwd):
        # [[V]]_P: E cannot open it
        assert _sealed_only_for(res.enc_v, owner="P", reader="E")
        # [[z_B]]_E opens to z_B = b·W_B (allowed), not to b
        vec = opener.load(res.enc_zb, rows=len(truth["b"][step]), length=h, what="z_B")
        z_b = opener.decrypt(vec, h).astype(float) / 2.0**SCALES.zb_bits
        np.testing.assert_allclose(z_b, truth["b"][step] @ truth["w_b"][step], atol=1e-4)
    for step, res in enumerate(pair.e_rec.of_type(SecureBackwardRes)):
        vec = opener.load(res.enc_ge, rows=CFG.passive_out, length=h, what="update")
        seen = opener.decrypt(vec, h).astype(float)
        true = truth["grad_w"][step].astype(float) * 2.0**SCALES.w_bits  # bᵀδ at the share scale
        # every slot is bᵀδ plus a mask at least 2^30 times larger than any |bᵀδ|
        assert np.abs(seen).min() > 2.0**30 * np.abs(true).max()


def test_what_p_receives(run) -> None:
    pair, truth = run
    opener = _opener("P")
    d = CFG.passive_out
    n_users = pair.p.numeric.shape[0]
    (setup,) = pair.p_rec.of_type(SetupIns)
    assert _sealed_only_for(setup.enc_init, owner="E", reader="P")  # [[Qᵀ]]_E
    for m in pair.p_rec.of_type(SecureForwardIns):
        assert m.users.dtype == np.int64 and m.users.ndim == 1  # who, nothing per row
        assert m.users.min() >= 0 and m.users.max() < n_users
        if m.enc_u:
            assert _sealed_only_for(m.enc_u, owner="E", reader="P")  # [[U]]_E
    bwd = pair.p_rec.of_type(SecureBackwardIns)
    assert len(bwd) == STEPS
    for step, m in enumerate(bwd):
        assert _sealed_only_for(m.enc_g, owner="E", reader="P")  # [[δ]]_E
        vec = opener.load(m.enc_db, rows=len(truth["b"][step]), length=d, what="dL/db")
        d_b = opener.decrypt(vec, d).astype(float) / 2.0**SCALES.db_bits
        np.testing.assert_allclose(d_b, truth["d_b"][step], atol=1e-5)  # dL/db, allowed


def _readable(pair: Pair, party: str) -> list[np.ndarray]:
    """Every array ``party`` can read in the clear from what it received."""
    rec, opener = (pair.e_rec, _opener("E")) if party == "E" else (pair.p_rec, _opener("P"))
    mine = keys(party).public_key
    out: list[np.ndarray] = []
    for m in rec.received:
        for f in dataclasses.fields(m):  # type: ignore[arg-type]
            value = getattr(m, f.name)
            if isinstance(value, np.ndarray):
                out.append(value.astype(float))
            elif isinstance(value, bytes) and value.startswith(b"VFLE"):
                try:
                    vec = EncryptedVector.deserialise(value, mine)
                except KeyMismatchError:
                    continue  # sealed under the other party's key
                width = vec.shape[1] * opener.k
                out.append(opener.decrypt(vec, width).astype(float))
    return out


def _appears(secret: np.ndarray, seen: np.ndarray) -> bool:
    """Whether most non-zero entries of ``secret`` occur in ``seen`` at some common scale."""
    s = np.asarray(secret, float).ravel()
    v = np.asarray(seen, float).ravel()
    if np.unique(s).size < 3:  # a 0/1 pattern (labels): look for the pattern itself
        return s.size == v.size and bool(np.array_equal(s != 0, v != 0))
    s = s[s != 0]
    if not s.size or not v.size or not np.abs(v).max():
        return False
    s, v = s / np.abs(s).max(), v / np.abs(v).max()
    hits = np.isclose(s[:, None], v[None, :], rtol=1e-6, atol=1e-9).any(axis=1)
    return bool(hits.mean() > 0.5)


def test_nothing_either_party_reads_is_a_value_it_must_not_see(run) -> None:
    pair, truth = run
    labels = [b.labels for b in truth["batches"]]
    s = 2.0**SCALES.w_bits
    never_e = {
        "P's features": [pair.p.numeric.numpy()],
        "b": truth["b"],
        "V": [pair.server.share.v.astype(float) / s],
        "W_B": truth["w_b"],
        "dL/db": truth["d_b"],
    }
    inputs = pair.model.head.inputs
    never_p = {
        "E's features": [inputs.users.numeric.numpy(), inputs.items.numeric.numpy()],
        "e": truth["e"],
        "W_B": truth["w_b"],
        "labels": labels,
        "δ": truth["delta"],
        "U": [pair.model.peer.share.u.astype(float) / s],
        "z_B": [b @ w for b, w in zip(truth["b"], truth["w_b"], strict=True)],
        "predictions": truth["pred"],
    }
    for party, forbidden in (("E", never_e), ("P", never_p)):
        seen = _readable(pair, party)
        assert seen, party
        for name, values in forbidden.items():
            for secret in values:
                assert not any(_appears(secret, x) for x in seen), f"{party} can read {name}"


def test_check_would_catch_a_leak(run) -> None:
    # The detector itself: a plain b (or b scaled) among E's readable values is found
    _, truth = run
    assert _appears(truth["b"][0], truth["b"][0] * 2.0**20)
    assert not _appears(truth["b"][0], truth["b"][0] @ truth["w_b"][0])
    labels = truth["batches"][0].labels
    assert _appears(labels, labels * 7.0) and not _appears(labels, np.ones(3))


def _n_cts(data: bytes, owner: str) -> int:
    return len(EncryptedVector.deserialise(data, keys(owner).public_key).ciphertexts)


def test_every_ciphertext_back_to_its_owner_was_rerandomised(run) -> None:
    pair, _ = run
    e, p = pair.model.peer.share, pair.server.share
    assert e.peer is not None and p.peer is not None
    # P returns [[z_B]]_E and [[bᵀδ - R]]_E to E; E returns [[δ·W_Bᵀ]]_P to P
    back_to_e = sum(_n_cts(m.enc_zb, "E") for m in pair.e_rec.of_type(SecureForwardRes)) + sum(
        _n_cts(m.enc_ge, "E") for m in pair.e_rec.of_type(SecureBackwardRes)
    )
    back_to_e += sum(_n_cts(m.enc_init, "E") for m in pair.e_rec.of_type(SetupRes))
    back_to_p = sum(_n_cts(m.enc_db, "P") for m in pair.p_rec.of_type(SecureBackwardIns))
    assert p.peer.counts.rerandomisations == back_to_e > 0
    assert e.peer.counts.rerandomisations == back_to_p > 0
    # fresh encryptions: [[Qᵀ]]_E, [[U]]_E, [[δ]]_E by E and [[Vᵀ]]_P by P, fresh r^n each
    fresh_e = sum(_n_cts(m.enc_init, "E") for m in pair.p_rec.of_type(SetupIns))
    fresh_e += sum(_n_cts(m.enc_u, "E") for m in pair.p_rec.of_type(SecureForwardIns) if m.enc_u)
    fresh_e += sum(_n_cts(m.enc_g, "E") for m in pair.p_rec.of_type(SecureBackwardIns))
    fresh_p = sum(_n_cts(m.enc_v, "P") for m in pair.e_rec.of_type(SecureForwardRes) if m.enc_v)
    assert e.own.counts.encryptions == fresh_e and p.own.counts.encryptions == fresh_p


def test_same_inputs_give_unlinkable_ciphertexts_with_the_same_plaintext() -> None:
    # Prepare: both halves of the layer, keys exchanged, no thread
    from vfl.protocol.fixed_point import uniform_mask
    from vfl.protocol.secure_layer import ActiveShare, PassiveShare

    s, rng = settings(), np.random.default_rng(3)
    d, h = CFG.passive_out, CFG.interactive_out
    u = uniform_mask((d, h), SCALES.mask_bits)  # masked shares of a small W_B
    v = uniform_mask((d, h), SCALES.w_bits - 2) - u
    e = ActiveShare(u=u, settings=s, keys=keys("E"), floor=TEST_FLOOR)
    p = PassiveShare(v=v, settings=s, keys=keys("P"), floor=TEST_FLOOR)
    e.set_peer(p.own.key_bytes(), scheme=s.scheme)
    p.set_peer(e.own.key_bytes(), scheme=s.scheme)
    b, delta = rng.uniform(-1, 1, (4, d)), rng.normal(0, 1e-2, (4, h))
    # Execute: the same forward and the same backward twice
    enc_u = e.u_payload()
    zb1, vt = p.forward_payload(b, enc_u, train=True)
    zb2, _ = p.forward_payload(b, b"", train=True)
    e.accept_vt(vt)
    g1, db1 = e.backward_payload(delta)
    e.accept_vt(vt)
    g2, db2 = e.backward_payload(delta)
    # Assert: different bytes every time, same decryptions
    assert zb1 != zb2 and db1 != db2 and g1 != g2
    np.testing.assert_array_equal(e.decode_zb(zb1, 4), e.decode_zb(zb2, 4))
    dec = _opener("P")
    rows = [dec.decrypt(dec.load(x, rows=4, length=d, what="db"), d) for x in (db1, db2)]
    np.testing.assert_array_equal(rows[0], rows[1])
