"""Data quality of the lake: Great Expectations suites generated from the contracts, run per partition."""
