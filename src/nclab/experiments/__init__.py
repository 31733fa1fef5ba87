"""The papers' experiments, each a function that runs training / probes and returns records."""
