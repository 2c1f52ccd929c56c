"""The lake: where everything Track stores lives, and the only code that reads or writes it.

- `store`: paths, raw files, partitioned and state tables, numbered snapshots and the commit
  protocol (the `Lake` class);
- `lock`: one run at a time, across processes and machines;
- `delta`: every table a Delta table, published from each snapshot;
- `ingest`: raw files read, checked and staged as rows;
- `merge`: staged rows merged into the tables (dedup, expiry, rollups);
- `faults`: the test-only seam that kills or freezes a run at a named point.
"""
