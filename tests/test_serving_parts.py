"""The service's parts in one process: the z_B cache files, the [serving] config rules, the
token file and the metrics text (the processes are in tests/test_serving.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from vfl.cli.infer_cmd import _token
from vfl.config.party import load_party_config
from vfl.data.synthetic_writer import generate_synthetic
from vfl.errors import ConfigError, ShardError
from vfl.party.export import Shard
from vfl.party.service import Metrics
from vfl.party.zb_cache import ARRAY, META, ZbCache, cache_dir, load_cache


def _shard(tmp_path: Path, digest: str = "d" * 64) -> Shard:
    (tmp_path / "model").mkdir(exist_ok=True)
    return Shard(tmp_path / "model", {"shard_sha256": digest, "plan_fingerprint": "fp"})


def test_the_cache_round_trips_in_private_files_and_refuses_what_does_not_fit(
    tmp_path: Path,
) -> None:
    # Prepare
    shard = _shard(tmp_path)
    z_b = np.random.default_rng(1).standard_normal((7, 4))
    assert load_cache(shard, 7) is None  # no refresh yet
    # Execute
    ZbCache(z_b=z_b, refreshed_at=time.time() - 30, shard=shard.digest).save(cache_dir(shard), "fp")
    got = load_cache(shard, 7)
    # Assert
    assert got is not None and np.array_equal(got.z_b, z_b) and 29 < got.age_s() < 60
    assert cache_dir(shard).stat().st_mode & 0o777 == 0o700
    for name in (ARRAY, META):
        assert (cache_dir(shard) / name).stat().st_mode & 0o777 == 0o600
    with pytest.raises(ShardError, match="rows for 8 aligned users"):
        load_cache(shard, 8)
    with pytest.raises(ShardError, match="another shard"):
        load_cache(_shard(tmp_path, "e" * 64), 7)
    raw = bytearray((cache_dir(shard) / ARRAY).read_bytes())
    raw[-1] ^= 1
    (cache_dir(shard) / ARRAY).write_bytes(bytes(raw))
    with pytest.raises(ShardError, match=r"zb\.npy: changed since its refresh.*Fix: delete"):
        load_cache(shard, 7)


def test_a_serving_section_is_refused_at_p_and_checked_at_e(tmp_path: Path) -> None:
    # Prepare
    generate_synthetic(tmp_path, users=200, items=40, overlap=0.8, seed=3)
    token, cert = tmp_path / "token", tmp_path / "cert.pem"
    token.write_text("short\n")
    cert.write_text("x")
    section = (
        f'\n[serving]\nlisten = "127.0.0.1:8443"\ntls_cert = "{cert}"\ntls_key = "{cert}"\n'
        f'token_file = "{token}"\n'
    )
    p_cfg, e_cfg = tmp_path / "p_party.toml", tmp_path / "e_party.toml"
    p_cfg.write_text(p_cfg.read_text() + section)
    e_cfg.write_text(e_cfg.read_text() + section.replace("8443", "99999"))
    # Execute / Assert
    with pytest.raises(ConfigError, match="serving"):
        load_party_config(p_cfg)
    with pytest.raises(ConfigError, match=r"serving\.listen"):
        load_party_config(e_cfg)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        _token(token)
    token.write_text("a-long-enough-token-0123\n")
    assert _token(token) == "a-long-enough-token-0123"


def test_metrics_count_requests_and_fill_the_histogram() -> None:
    metrics = Metrics()
    metrics.observe("/recommend", 200, 0.004)
    metrics.observe("/recommend", 200, 0.3)
    metrics.observe("/recommend", 404, 0.001)
    text = "\n".join(metrics.lines())
    assert 'vfl_requests_total{endpoint="/recommend",status="200"} 2' in text
    assert 'vfl_requests_total{endpoint="/recommend",status="404"} 1' in text
    assert 'vfl_request_seconds_bucket{endpoint="/recommend",le="0.005"} 2' in text
    assert 'vfl_request_seconds_bucket{endpoint="/recommend",le="+Inf"} 3' in text
