"""Speed and memory benchmarks of the CLIP prompt trainers (``python -m benchmarks.bench_trainers``; docs/BENCHMARK.md)."""
