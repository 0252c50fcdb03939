"""Benchmarks: each module defines ``run(out_dir: Path) -> dict`` and is listed in BENCHMARKS."""
