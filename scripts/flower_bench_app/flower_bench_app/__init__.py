"""Flower side of scripts/bench_vs_flower.py."""
