"""Support code of the test suite (helpers run by tests, not tests themselves)."""
