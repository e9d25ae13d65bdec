"""The suite's fixtures live in ``tests/fixtures/``; this file only loads them."""

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.containers",
    "tests.fixtures.kafka_clients",
    "tests.fixtures.pki",
    "tests.fixtures.stack",
    "tests.fixtures.toxiproxy",
]
