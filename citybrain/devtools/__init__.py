"""Developer tools: the benchmark, the demo, sample records, the browser harness. Production code does not import them."""
