"""The resource governor: concurrency slots, a FIFO queue, memory caps, thread limits, a cost model.

Pure modules (no plpy): ``settings`` (what an administrator configures), ``store`` (the
cluster-wide job store: SQLite plus file locks under the data directory), ``admission`` (who
runs next, how many rows a job may read), ``costmodel`` (predicted seconds and peak memory),
``limits`` (in-process caps: address space, threads; peak memory measurement), ``workload``
(lanes: small scoring skips the queue; how many governed jobs the load allows), ``load``
(readings of /proc), ``priority`` (a training's fits on a helper thread that yields the CPU).
``sqlml.server.governing`` wires them to PL/Python.
"""
