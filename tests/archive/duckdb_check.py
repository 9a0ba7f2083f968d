"""Reads the archiver's Delta table with DuckDB (its `delta` extension): an independent reader proves the table
is open Delta Lake. Prints per (tenant, date) the rows and distinct event ids of `events`, the rows whose params
map has sub1 = 'google', and the sum of `rollups`, as JSON. Usage: duckdb_check.py <archive dir>"""
import glob
import json
import os
import sys

import duckdb
import duckdb_ext

events = os.path.join(sys.argv[1], "events")
rollups = os.path.join(sys.argv[1], "rollups")
ext = glob.glob(os.path.join(list(duckdb_ext.__path__)[0], "extensions", "*", "*", "delta.duckdb_extension"))
con = duckdb.connect()
con.execute(f"LOAD '{ext[0]}'")
rows = con.execute(
    "SELECT tenant, date, count(*), count(DISTINCT event_id) FROM delta_scan(?) GROUP BY 1, 2 ORDER BY 1, 2",
    [events],
).fetchall()
google = con.execute("SELECT count(*) FROM delta_scan(?) WHERE params['sub1'] = 'google'", [events]).fetchone()[0]
rollup_events = con.execute("SELECT sum(events) FROM delta_scan(?)", [rollups]).fetchone()[0]
print(json.dumps({"per_day": [[t, str(d), n, u] for t, d, n, u in rows], "sub1_google": google, "rollup_events": rollup_events}))
