"""Transport: the Kafka broker (local, Docker or given), topics as code, client configs."""
