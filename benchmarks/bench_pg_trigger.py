"""Cost of the PostgreSQL audit trigger, and read speed of ``read_postgres``.

Builds two identical tables of ``--rows`` rows (bigint id, text label, five
float features) on the server given by ``--dsn`` (default: the test server),
protects one with ``flipguard.integrity._pg.protect``, and times on both, in
the same run, alternating which table goes first:

* label UPDATEs of ``--batch-rows`` rows in batches of ``--batch`` rows (one
  transaction per batch);
* ``--single`` single-row label UPDATEs, each its own transaction (autocommit),
  with durable commits and again with ``synchronous_commit = off`` (CPU cost only);
* the same single-row UPDATEs inside one transaction;
* UPDATEs of a feature column only (the trigger's WHEN clause skips them);
* a bulk INSERT of ``--batch-rows`` rows;

then times ``verify_postgres`` on the protected table and its trail.

Then reads the table into Arrow with ``read_postgres`` (COPY -> CSV -> Arrow)
and, for comparison, with a plain cursor ``fetchall`` turned into an Arrow table.  Prints a Markdown
table; everything it creates is dropped at the end.

Run: ``.venv/bin/python benchmarks/bench_pg_trigger.py [--rows 1000000]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyarrow as pa
from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def main() -> None:
    import psycopg
    from psycopg import sql

    from flipguard.data._postgres import read_postgres
    from flipguard.integrity._pg import protect, unprotect

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=os.environ.get("FLIPGUARD_TEST_PG_DSN",
                                                   "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch-rows", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--single", type=int, default=3_000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="200,000-row tables, 50,000-row batches, 500 singles")
    args = p.parse_args()
    if args.quick:
        args.rows, args.batch_rows, args.single, args.repeat = 200_000, 50_000, 500, 2

    tag = f"{os.getpid()}"
    names = {"plain": f"fg_bench_plain_{tag}", "protected": f"fg_bench_protected_{tag}"}
    audit = {"audit_role": f"fg_bench_auditor_{tag}", "schema": f"fg_bench_audit_{tag}"}
    conn = psycopg.connect(args.dsn, autocommit=True)
    server = conn.execute("SHOW server_version").fetchone()[0]
    results: dict[str, dict[str, list[float]]] = {k: {} for k in names}
    try:
        for name in names.values():
            t0 = time.perf_counter()
            conn.execute(sql.SQL(
                "CREATE TABLE {} AS SELECT g::bigint AS id, CASE WHEN g %% 2 = 0 THEN 'spam' ELSE 'ham' END "
                "AS label, random() AS f0, random() AS f1, random() AS f2, random() AS f3, random() AS f4 "
                "FROM generate_series(1, %s) g").format(sql.Identifier(name)), (args.rows,))
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(name)))
            print(f"built {name}: {args.rows:,} rows in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        protect(args.dsn, names["protected"], id="id", label="label", **audit)
        print(f"protect: {time.perf_counter() - t0:.2f} s")

        def timed(kind, what, fn, n):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            results[kind].setdefault(what, []).append(n / dt)

        rng = np.random.default_rng(0)
        for rep in range(args.repeat):
            order = list(names) if rep % 2 == 0 else list(reversed(names))
            value = f"r{rep}"
            for kind in order:
                t = sql.Identifier(names[kind])

                def batches():
                    for lo in range(1, args.batch_rows + 1, args.batch):
                        conn.execute(sql.SQL("UPDATE {} SET label = %s WHERE id BETWEEN %s AND %s").format(t),
                                     (value, lo, lo + args.batch - 1))

                ids = rng.integers(1, args.rows + 1, size=args.single).tolist()
                stmt = sql.SQL("UPDATE {} SET label = %s WHERE id = %s").format(t)

                def singles():
                    for i in ids:
                        conn.execute(stmt, (value + "s", i))

                def singles_async():  # the CPU cost without waiting for the disk at each commit
                    conn.execute("SET synchronous_commit = off")
                    try:
                        for i in ids:
                            conn.execute(stmt, (value + "a", i))
                    finally:
                        conn.execute("RESET synchronous_commit")

                def singles_one_tx():
                    with conn.transaction():
                        for i in ids:
                            conn.execute(stmt, (value + "t", i))

                def features():
                    for lo in range(1, args.batch_rows + 1, args.batch):
                        conn.execute(sql.SQL("UPDATE {} SET f0 = f0 + 1 WHERE id BETWEEN %s AND %s").format(t),
                                     (lo, lo + args.batch - 1))

                start = args.rows + 1 + rep * args.batch_rows

                def inserts():
                    conn.execute(sql.SQL("INSERT INTO {} SELECT g, 'ham', 0, 0, 0, 0, 0 "
                                         "FROM generate_series(%s::bigint, %s::bigint) g").format(t),
                                 (start, start + args.batch_rows - 1))

                timed(kind, f"label UPDATE, {args.batch_rows:,} rows in batches of {args.batch:,}", batches,
                      args.batch_rows)
                timed(kind, f"label UPDATE, {args.single:,} single-row transactions", singles, args.single)
                timed(kind, f"label UPDATE, {args.single:,} single-row transactions, synchronous_commit off",
                      singles_async, args.single)
                timed(kind, f"label UPDATE, {args.single:,} single-row statements in one transaction",
                      singles_one_tx, args.single)
                timed(kind, f"feature-only UPDATE, {args.batch_rows:,} rows (trigger skipped)", features,
                      args.batch_rows)
                timed(kind, f"INSERT of {args.batch_rows:,} rows (one statement)", inserts, args.batch_rows)

        from flipguard.integrity._pg import verify_postgres

        t0 = time.perf_counter()
        report = verify_postgres(args.dsn, names["protected"], schema=audit["schema"])
        t_verify = time.perf_counter() - t0
        assert report.ok, report.to_dict()

        reads = {}
        for _ in range(2):
            t0 = time.perf_counter()
            tbl = read_postgres(args.dsn, table=names["plain"])
            reads.setdefault("read_postgres (COPY CSV -> Arrow)", []).append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with psycopg.connect(args.dsn) as c2:
                cur = c2.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(names["plain"])))
                rows = cur.fetchall()
                cols = [d.name for d in cur.description]
            as_arrow = pa.table({c: pa.array(v) for c, v in zip(cols, zip(*rows))})
            reads.setdefault("cursor fetchall, then pyarrow.table", []).append(time.perf_counter() - t0)
            del rows, as_arrow
        n_read = tbl.num_rows
    finally:
        try:
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (names["protected"],)).fetchone()[0]:
                unprotect(args.dsn, names["protected"], drop_trail=True, schema=audit["schema"])
        finally:
            for name in names.values():
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(audit["schema"])))
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (audit["audit_role"],)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(audit["audit_role"])))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(audit["audit_role"])))
            conn.close()

    print()
    print(f"Machine: {machine()}; PostgreSQL {server}")
    print()
    print(f"| operation ({args.rows:,}-row table) | plain rows/s | protected rows/s | protected / plain |")
    print("|---|---:|---:|---:|")
    for what in results["plain"]:
        a, b = max(results["plain"][what]), max(results["protected"][what])
        print(f"| {what} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
    print()
    print(f"pg verify (chain + replay against the table, no seal): {report.n_events:,} trail rows, "
          f"{args.rows + args.repeat * args.batch_rows:,}-row table: {t_verify:.2f} s")
    print()
    print(f"| read {n_read:,} rows x 7 columns | best of 2 (s) |")
    print("|---|---:|")
    for what, times in reads.items():
        print(f"| {what} | {min(times):.2f} |")


if __name__ == "__main__":
    main()
