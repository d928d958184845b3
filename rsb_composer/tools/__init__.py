"""The command-line tools beside training: pre-flight checks, benchmarks and reports, one module each."""
