"""TWB2 between a real primary WAL and a real replica server: a trained dictionary, TWB1 too."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import with_overrides
from pipeline.replication import ApplyAuth, ReplicaServer, ReplicaState, WalShipper
from pipeline.wal.batch import Dictionary, encode_batch
from tests.fixtures.broker import MakeSettings
from tests.fixtures.support import THEMIS, settings_as_env, settings_env, wait_until
from tests.fixtures.wal import post_wal_apply, wal_shipping_settings
from tests.integration.test_wal_shipping import (
    DIM,
    append_to_wal,
    assert_replica_equals,
    mixed_payloads,
    wal_entries,
)

pytestmark = pytest.mark.integration

KEY = "twb2-ship-key"
PRIMARY = "primary-twb"


def _post(port: int, body: bytes) -> tuple[int, Any]:
    return post_wal_apply(port, body, {"X-Primary-ID": PRIMARY, "Authorization": f"Bearer {KEY}"})


def test_a_replica_applies_an_old_primarys_twb1_then_twb2_with_the_trained_dictionary(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    payloads, model = mixed_payloads(150, seed=4)
    settings = wal_shipping_settings(make_settings, dimension=DIM, ship_key=KEY)
    append_to_wal(settings, payloads)
    assert settings.kafka.bootstrap_servers
    path = tmp_path / "wal.dict"
    trained = subprocess.run(
        [*THEMIS, "wal", "train-dictionary", "--out", str(path), "--entries", "150"],
        env=settings_env(settings_as_env(settings)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    dictionary = Dictionary.from_file(path, "test")
    assert orjson.loads(trained.stdout) == {
        "dictionary_id": dictionary.dictionary_id,
        "bytes": len(dictionary.data),
        "file": str(path),
    }
    # The facade and `themis wal ship` both build their shipper from these settings.
    shipping = with_overrides(settings, {"compressed_wal_shipping": {"dictionary_file": str(path)}})
    state = ReplicaState(tmp_path / "replica", settings)
    server = ReplicaServer(state, auth=ApplyAuth([KEY]))
    port = server.start()
    try:
        entries = wal_entries(payloads)
        old = encode_batch(entries[:40], "zstd", 3, PRIMARY, format_version=1)
        assert old[:4] == b"TWB1"
        status, body = _post(port, old)
        assert (status, body["success"], body["entries_applied"]) == (200, True, 40)
        shipper = WalShipper(shipping, primary_id=PRIMARY, max_batch_entries=30)
        assert shipper.compression()[2] == dictionary
        try:
            shipper.add_replica("twb2", f"http://127.0.0.1:{port}")
            wait_until(lambda: state.last_applied_lsn == 150, timeout_s=60, what="150 entries")
            wait_until(shipper.caught_up, timeout_s=30, what="the shipper caught up")
            stats = shipper.stats()["stats"]
        finally:
            shipper.close()
        assert_replica_equals(state, model)
        assert (tmp_path / "replica" / "dictionaries" / str(dictionary.dictionary_id)).is_file()
        assert stats["failed_ships"] == 0
        assert stats["total_bytes_shipped"] < stats["total_bytes_uncompressed"]
        again = encode_batch(entries[100:], "zstd", 3, PRIMARY, dictionary, carry_dictionary=False)
        status, body = _post(port, again)  # a TWB2 batch naming a dictionary it now holds
        assert (status, body["success"], body["entries_applied"]) == (200, True, 0)
    finally:
        server.stop()
        state.close()
