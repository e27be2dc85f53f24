"""The load generator now lives in the `stayhuman bench` package; kept here for the scripts that
import it from the tests."""

from stayhuman.bench.loadgen import LoadResult, build_post, run_load

__all__ = ["LoadResult", "build_post", "run_load"]
