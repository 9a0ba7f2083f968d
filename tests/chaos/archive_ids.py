"""Prints the event id of every row of an archive's `events` Delta table, read with DuckDB's `delta` extension (an
independent reader). Usage: archive_ids.py <archive dir>"""
import glob
import os
import sys

import duckdb
import duckdb_ext

events = os.path.join(sys.argv[1], "events")
if not os.path.isdir(os.path.join(events, "_delta_log")):
    sys.exit(0)  # nothing archived yet
ext = glob.glob(os.path.join(list(duckdb_ext.__path__)[0], "extensions", "*", "*", "delta.duckdb_extension"))
con = duckdb.connect()
con.execute(f"LOAD '{ext[0]}'")
for (event_id,) in con.execute("SELECT CAST(event_id AS VARCHAR) FROM delta_scan(?)", [events]).fetchall():
    print(event_id)
