"""The DuckDB half of `make bench-query`: the benchmark's questions as SQL over the same Delta tables (DuckDB's
`delta` extension reads the same Parquet files), 2 threads like ours, median of 5 runs each. Prints one line per
query: `<name> duckdb <median ms> <answer digest>`.

Usage: query_duckdb.py <lake dir> <tenant> <from ms> <to ms>"""
import glob
import os
import statistics
import sys
import time

import duckdb
import duckdb_ext

lake, tenant, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ext = glob.glob(os.path.join(list(duckdb_ext.__path__)[0], "extensions", "*", "*", "delta.duckdb_extension"))
con = duckdb.connect()
con.execute(f"LOAD '{ext[0]}'")
con.execute("SET threads TO 2")
con.execute("SET TimeZone = 'UTC'")
events = os.path.join(lake, "events")
rollups = os.path.join(lake, "rollups")
first_day = time.strftime("%Y-%m-%d", time.gmtime(start / 1000))
last_day = time.strftime("%Y-%m-%d", time.gmtime((end - 1) / 1000))
# day buckets on naive UTC timestamps: a day bucket of a TIMESTAMPTZ goes through ICU time zones, 10-30x slower
# here (hour buckets are faster as they are); each query is in its fastest form we found
# the same pruning our tier does: the tenant's partitions for the days of the range, then the exact time range
scope = (f"tenant = '{tenant}' AND date BETWEEN '{first_day}' AND '{last_day}' "
         f"AND timestamp >= make_timestamp({start * 1000}) AND timestamp < make_timestamp({end * 1000})")
warm_scope = (f"tenant = '{tenant}' AND date BETWEEN '{first_day}' AND '{last_day}' "
              f"AND hour >= make_timestamp({start * 1000}) AND hour < make_timestamp({end * 1000})")
ev = f"delta_scan('{events}')"
ro = f"delta_scan('{rollups}')"
queries = {
    "series_hour_by_type": f"""
        SELECT time_bucket(INTERVAL 1 hour, timestamp) AS t, event_type AS g, count(*) AS count
        FROM {ev} WHERE {scope} GROUP BY ALL ORDER BY t, g""",
    "breakdown_sub3_top10_distinct_links": f"""
        SELECT params['sub3'] AS g, count(*) AS count, count(DISTINCT tu_id) AS d, sum(count(*)) OVER () AS total
        FROM {ev} WHERE {scope} GROUP BY g ORDER BY count DESC, g NULLS FIRST LIMIT 10""",
    "events_page_sub2": f"""
        SELECT event_id, event_type, timestamp, tu_id, params FROM {ev}
        WHERE {scope} AND params['sub2'] = 'campaign-16' ORDER BY timestamp, event_id LIMIT 100""",
    "series_day_sub1": f"""
        SELECT time_bucket(INTERVAL 1 day, timestamp::TIMESTAMP) AS t, count(*) AS count
        FROM {ev} WHERE {scope} AND params['sub1'] = 'google' GROUP BY t ORDER BY t""",
    # SQL's nearest equivalent of last-touch pairing: each conversion joined to the latest earlier click with the
    # same sub1 within the hour (ASOF JOIN); it does not stop a click from being credited twice, which ours does
    "match_click_to_conversion_on_sub1_1h": f"""
        WITH e AS (SELECT params['sub1'] AS k, timestamp AS ts, event_id, event_type FROM {ev}
                   WHERE {scope} AND event_type IN ('click', 'conversion') AND params['sub1'] IS NOT NULL),
             c AS (SELECT * FROM e WHERE event_type = 'click'),
             r AS (SELECT * FROM e WHERE event_type = 'conversion')
        SELECT count(*) AS count, count(*) AS matched, median(epoch_ms(r.ts) - epoch_ms(c.ts)) AS p50
        FROM r ASOF JOIN c ON r.k = c.k AND r.ts >= c.ts
        WHERE r.ts - c.ts <= INTERVAL 1 hour""",
    "warm_series_day_by_type": f"""
        SELECT time_bucket(INTERVAL 1 day, hour::TIMESTAMP) AS t, event_type AS g, sum(events) AS count
        FROM {ro} WHERE {warm_scope} GROUP BY ALL ORDER BY t, g""",
    "warm_breakdown_links_top10": f"""
        SELECT tu_id AS g, sum(events) AS count FROM {ro} WHERE {warm_scope}
        GROUP BY g ORDER BY count DESC, g NULLS FIRST LIMIT 10""",
}
for name, sql in queries.items():
    times, rows = [], []
    for _ in range(5):
        t = time.perf_counter()
        cur = con.execute(sql)
        rows = cur.fetchall()
        times.append((time.perf_counter() - t) * 1000)
        cols = [d[0] for d in cur.description]
    if "matched" in cols:
        digest = f"rows={min(10, rows[0][0])} matched={rows[0][1]}"
    elif "count" in cols:
        i = cols.index("count")
        digest = f"rows={len(rows)} sum={sum(r[i] for r in rows)}"
    else:
        digest = f"rows={len(rows)} sum=0"
    print(f"{name} duckdb {statistics.median(times):.1f} {digest}", flush=True)
