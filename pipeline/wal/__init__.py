"""The WAL and its shipping: every applied mutation, in order, to replica clusters."""
