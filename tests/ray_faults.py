"""Fault injection for tests/test_ray.py, installed in every worker of the tests' Ray cluster
(runtime_env's worker_process_setup_hook), so the engine carries no test hooks.

A worker building the chunk named by a marker file <$FACET_ATLAS_CRASH_DIR>/<layer>__<first unit>.crash
deletes the marker and dies abruptly (like a killed worker) after writing the chunk's other parts and
before its `neurons` part: it happens once, and the retry must clean up.
"""
import os

CRASH_DIR_ENV = "FACET_ATLAS_CRASH_DIR"


def install() -> None:
    from precompute.core.store import Store
    write = Store.write

    def write_or_die(self, table, name, rows):
        if table == "neurons":
            marker = os.path.join(os.environ[CRASH_DIR_ENV], "__".join(name.split("__")[-2:]) + ".crash")
            try:
                os.remove(marker)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        return write(self, table, name, rows)

    Store.write = write_or_die
