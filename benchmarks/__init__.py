"""Side-by-side benchmarks of sccourse kernels against named reference implementations."""
