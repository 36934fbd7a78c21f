"""Workflows built from the stages: the main job and its HTML report, and the benchmarks that are
commands (``medfoundry benchmark transfer``)."""
