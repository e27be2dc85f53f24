"""A service process runs with the collector tuned (`stayhuman.serve.tune_gc`): what starting
left is frozen, the young are collected rarely, and cycles made while it runs are still found
without anyone asking. Run in a fresh interpreter, since the tuning is for the whole process."""

import json
import subprocess
import sys
import textwrap

from stayhuman.serve import GC_THRESHOLDS

PROGRAM = textwrap.dedent(
    """
    import gc, json, weakref
    from stayhuman.serve import run

    class Node:
        pass

    async def main():
        first = Node()
        first.me = first  # a cycle: only the collector frees it
        dead = weakref.ref(first)
        del first
        for _ in range(200_000):  # what a few busy units of work keep alive for a while
            node = Node()
            node.me = node
        print(json.dumps({
            "threshold": gc.get_threshold(),
            "frozen": gc.get_freeze_count(),
            "cycle_freed": dead() is None,
        }))

    run(main())
    """
)


def test_a_service_runs_with_the_collector_tuned_and_still_frees_cycles() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert tuple(seen["threshold"]) == GC_THRESHOLDS
    assert seen["frozen"] > 10_000  # the modules, the event loop, the settings machinery
    assert seen["cycle_freed"], "a cycle made while the service runs was never collected"
