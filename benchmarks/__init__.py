"""Speed, memory and GPU-readiness checks of the CLIP prompt trainers (``python -m benchmarks.bench_trainers``,
``python -m benchmarks.gpu_check``; docs/BENCHMARK.md)."""
