"""Deforum-style animation steps: pure functions on arrays and paths, wired together by the Snakemake rules."""
