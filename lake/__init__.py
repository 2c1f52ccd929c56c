"""The lake: where everything Track stores lives, and the only code that reads or writes it.

- `store`: paths, raw files, partitioned and state tables, numbered snapshots and the commit
  protocol (the `Lake` class);
- `lock`: one run at a time, across processes and machines;
- `delta`: every table a Delta table, published from each snapshot;
- `raw`: one raw file read: its hash, whether it is lines at all, its runs of lines, all from
  one version of it;
- `ingest`: which raw files a run reads, read in batches, parsed and staged as rows;
- `merge`: staged rows merged into the tables (dedup, counts, quarantine, manifest, sessions);
- `retention`: the window a run keeps, and what leaves it;
- `report`: what a run did;
- `faults`: the test-only seam that kills or freezes a run at a named point.
"""
