#!/usr/bin/env python3
"""The cost per million events of a traffic mix (clicks, pixels, postbacks, batched events), per component, from the
counts this project measures (infra/cost/measured.json: each figure names its file and benchmark) and public list
prices (infra/cost/prices.json: each with its source and date). docs/cost.md explains the model and its limits.

    python3 scripts/cost.py                                   # the default mix, 100 million events a month
    python3 scripts/cost.py --clicks 0.9 --pixels 0 --postbacks 0.05 --batch 0.05 --events-per-month 1e9

Two columns: one queue message per click and per pixel (COALESCE_MS=0), and as deployed, with an isolate's clicks,
pixels and beacons of each COALESCE_MS window sharing a message: the events per message follow from each isolate's
traffic (--isolates, --coalesce-ms), or are set with --coalesce N. Standard library only."""
import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MONTH_SECS = 30 * 24 * 3600
MONTH_HOURS = 730
QUEUE_OP_BYTES = 64_000  # Queues bill each 64 KB (KB = 1,000 bytes) written, read or deleted
QUEUE_META_BYTES = 100  # "each message includes approximately 100 bytes of internal metadata"
GOAL = 0.50


def per_rate(points, rate):
    """A figure measured at some rates (events/s: value), at `rate`: interpolated between the two measured rates
    around it on logarithmic scales, and the nearest measured one's outside them."""
    pts = sorted((float(r), float(v)) for r, v in points.items())
    if rate <= pts[0][0]:
        return pts[0][1]
    for (r0, v0), (r1, v1) in zip(pts, pts[1:]):
        if rate <= r1:
            t = math.log(rate / r0) / math.log(r1 / r0)
            return math.exp(math.log(v0) + t * math.log(v1 / v0))
    return pts[-1][1]


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Model:
    def __init__(self, measured, prices, args):
        self.m = {k: v["value"] for k, v in measured["figures"].items()}
        self.p = prices["prices"]
        self.a = args

    def price(self, name, quantity, allowances):
        """Cost of `quantity` units at list price, less the plan's monthly allowance when `allowances`."""
        p = self.p[name]
        billable = max(0.0, quantity - (p.get("included", 0) if allowances else 0))
        return billable * p["value"] / p.get("per", 1)

    def ops_per_message(self, events):
        size = events * self.m["event_json_bytes"] + 40 + QUEUE_META_BYTES
        return math.ceil(size / QUEUE_OP_BYTES)

    def queue_messages(self, events, per_message):
        """Messages and operations (write + read + delete + retries) for `events` sent `per_message` at a time."""
        if events <= 0:
            return 0.0, 0.0
        per_msg_bytes = self.m["queue_message_max_bytes"]
        fit = max(1, per_msg_bytes // self.m["event_json_bytes"])
        per_message = min(per_message, fit)
        messages = events / per_message
        ops_each = self.ops_per_message(per_message) * (3 + self.a.retry_rate)
        return messages, messages * ops_each

    def usage(self, events, coalesce):
        """Monthly quantities for `events` a month; `coalesce` clicks (and pixels) per queue message."""
        a, m = self.a, self.m
        mix = normalised_mix(a)
        n = {k: events * share for k, share in mix.items()}
        u = {}
        # edge requests: one per click, pixel and postback, one per batch of --batch-size events
        batch_requests = n["batch"] / a.batch_size
        u["edge_requests"] = n["clicks"] + n["pixels"] + n["postbacks"] + batch_requests
        # queue: the waitUntil path (clicks, pixels, beacons) one event a message today; postbacks one a message;
        # a /batch request packed into messages of at most MAX_MESSAGE_BYTES
        msgs, ops = 0.0, 0.0
        core_us = 0.0
        for kind, per in (("clicks", coalesce), ("pixels", coalesce), ("postbacks", 1)):
            k_msgs, k_ops = self.queue_messages(n[kind], per)
            msgs, ops = msgs + k_msgs, ops + k_ops
            if k_msgs:
                core_us += k_msgs * self.intake_us(n[kind] / k_msgs)
        if batch_requests:
            per_request = math.ceil(a.batch_size * m["event_json_bytes"] / m["queue_message_max_bytes"])
            per_msg = a.batch_size / per_request
            b_msgs, b_ops = self.queue_messages(n["batch"], per_msg)
            msgs, ops = msgs + b_msgs, ops + b_ops
            core_us += b_msgs * self.intake_us(per_msg)
        u["queue_messages"], u["queue_ops"] = msgs, ops
        u["consumer_invocations"] = msgs * (1 + a.retry_rate) / m["consumer_batch_fill"]
        u["worker_requests"] = u["edge_requests"] + u["consumer_invocations"] + m["cron_invocations_per_month"]
        u["worker_cpu_ms"] = (u["edge_requests"] * m["worker_cpu_ms_per_request"]
                              + msgs * (1 + a.retry_rate) * m["consumer_cpu_ms_per_message"])
        # KV: lookups the isolate cache misses; a refill (KV write) per hot record per KV_FILL_TTL_SECS at most
        look = m["kv_lookups_per_request"]
        per_click = (1 - a.short_link_share) * look["click_signed"] + a.short_link_share * look["click_short"]
        lookups = (n["clicks"] * per_click + n["pixels"] * look["pixel"] + n["postbacks"] * look["postback"]
                   + batch_requests * look["batch_request"])
        # the location's cache (Cache API, free) answers what the isolates miss, but each location reads each record
        # it serves from KV once per KV_FILL_TTL_SECS at most (conservatively: every active record everywhere)
        colo_reads = a.locations * a.active_records * MONTH_SECS / m["kv_fill_ttl_secs"]
        u["kv_reads"] = min(lookups * (1 - a.cache_hit), colo_reads)
        refills = a.active_records * MONTH_SECS / m["kv_fill_ttl_secs"]
        u["kv_writes"] = min(refills, u["kv_reads"])
        u["kv_lists"] = m["cron_invocations_per_month"] + m["monitoring_kv_lists_per_month"]
        # the core fleet: intake per message, then consumers, archive and Iggy per event
        per_event_us = m["consumers_cpu_us_per_event"] + m["archive_cpu_us_per_event"] + m["iggy_cpu_us_per_event"]
        core_us = core_us * (1 + a.retry_rate) + events * per_event_us
        u["vcpu_hours_needed"] = core_us / 1e6 / 3600 / m["vcpu_target_utilisation"]
        floor = (a.fleet_floor_vcpu + (2 if a.hot_tier == "self-hosted" else 0)) * MONTH_HOURS
        u["vcpu_hours_floor"] = floor
        # hot tier on Turso: rows written per kept event at the month's average rate (a batch holds fewer events at
        # lower rates, and what it writes once is shared by fewer), deleted by retention too; storage of the segments
        # and the kept ids
        rate = events / MONTH_SECS
        rows = sum(per_rate(m["hot_rows_per_event"][k], rate) for k in ("written", "deleted"))
        u["turso_rows_written"] = events * rows if a.hot_tier == "turso" else 0.0
        per_hour = events / MONTH_HOURS
        hot_bytes = (per_hour * m["hot_retention_hours"] * m["hot_bytes_per_event"]
                     + per_hour * m["dedup_window_hours"] * m["seen_id_bytes"])
        u["turso_storage_gb"] = hot_bytes / 1e9 if a.hot_tier == "turso" else 0.0
        # R2: commits by size or time, one data file per partition and table, a log entry per table; OPTIMIZE
        # (reads what was written, writes one file per partition and table), checkpoint, lists, each hour
        parts = a.archive_partitions
        commits = max(events / m["archive_flush_events"], MONTH_SECS / m["archive_flush_secs"]) if events else 0
        runs = MONTH_SECS / m["archive_maintenance_secs"]
        u["r2_class_a"] = commits * (2 * parts + 2) + runs * (2 * parts + 4)
        u["r2_class_b"] = commits * 2 * parts + runs * (2 * parts + 10) + a.queries_per_month * m["query_r2_gets"]
        u["r2_storage_gb"] = events * a.retention_months * m["archive_bytes_per_event"] / 1e9
        # the query function: GB-seconds per query at the template's memory, from the benchmark's mean
        seconds = sum(m["query_ms"]) / len(m["query_ms"]) / 1000
        u["lambda_requests"] = a.queries_per_month
        u["lambda_gb_s"] = a.queries_per_month * seconds * m["lambda_memory_mb"] / 1024
        u["lambda_tmp_gb_s"] = a.queries_per_month * seconds * (m["lambda_ephemeral_mb"] - 512) / 1024
        return u

    def intake_us(self, events_per_message):
        m = self.m
        return m["core_cpu_us_per_intake_request"] + m["core_cpu_us_per_batched_event"] * (events_per_message - 1)

    def costs(self, u, allowances):
        """USD a month per component. Without `allowances`: list prices only (no plan fee, no included usage, no
        fleet floor), the marginal cost of the events."""
        p = self.price
        fixed = allowances
        c = {}
        c["Workers requests"] = p("workers_request", u["worker_requests"], allowances)
        c["Workers CPU time"] = p("workers_cpu_ms", u["worker_cpu_ms"], allowances)
        c["Workers plan"] = self.p["workers_plan_month"]["value"] if fixed else 0.0
        c["Queues operations"] = p("queues_operation", u["queue_ops"], allowances)
        c["KV reads"] = p("kv_read", u["kv_reads"], allowances)
        c["KV writes and lists"] = p("kv_write", u["kv_writes"], allowances) + p("kv_list", u["kv_lists"], allowances)
        hours = max(u["vcpu_hours_needed"], u["vcpu_hours_floor"]) if fixed else u["vcpu_hours_needed"]
        c["Core fleet (vCPU)"] = hours * self.p["vm_vcpu_hour"]["value"]
        turso = self.p["turso_plan_month"]["value"] if fixed else 0.0
        turso += p("turso_rows_written", u["turso_rows_written"], allowances)
        turso += p("turso_storage_gb_month", u["turso_storage_gb"], allowances)
        c["Turso (hot tier)"] = turso
        c["R2 (archive)"] = (p("r2_class_a", u["r2_class_a"], allowances) + p("r2_class_b", u["r2_class_b"], allowances)
                             + p("r2_storage_gb_month", u["r2_storage_gb"], allowances))
        c["Lambda (queries)"] = (p("lambda_request", u["lambda_requests"], allowances)
                                 + p("lambda_arm_gb_second", u["lambda_gb_s"], allowances)
                                 + p("lambda_ephemeral_gb_second", u["lambda_tmp_gb_s"], allowances))
        return c


def normalised_mix(a):
    mix = {"clicks": a.clicks, "pixels": a.pixels, "postbacks": a.postbacks, "batch": a.batch}
    total = sum(mix.values())
    if total <= 0:
        sys.exit("error: the mix is empty (--clicks, --pixels, --postbacks, --batch)")
    return {k: v / total for k, v in mix.items()}


def per_million(total, events):
    return total / (events / 1e6) if events else 0.0


def coalesce_factor(a, events):
    """Clicks and pixels per queue message as built: a window opens at an event and takes what its isolate gets
    within COALESCE_MS (on average 1 + rate x window for Poisson arrivals)."""
    if a.coalesce is not None:
        return a.coalesce
    mix = normalised_mix(a)
    per_isolate = events * (mix["clicks"] + mix["pixels"]) / MONTH_SECS / a.isolates
    return 1 + per_isolate * a.coalesce_ms / 1000


def break_even(model, coalesce=None):
    """The smallest monthly volume (to 2 significant digits) whose all-in cost is under GOAL per million, if any."""
    for exp10 in range(60, 130):
        events = 10 ** (exp10 / 10)
        per = coalesce if coalesce is not None else coalesce_factor(model.a, events)
        cost = sum(model.costs(model.usage(events, per), True).values())
        if per_million(cost, events) < GOAL:
            return events
    return None


def human(n):
    for unit, div in (("billion", 1e9), ("million", 1e6), ("thousand", 1e3)):
        if n >= div:
            return f"{n / div:,.3g} {unit}"
    return f"{n:,.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clicks", type=float, default=0.6, help="share of events that are clicks (/t, /t/<tu_id>)")
    ap.add_argument("--pixels", type=float, default=0.2, help="share that are pixels and beacons (/i, /t/auto)")
    ap.add_argument("--postbacks", type=float, default=0.1, help="share that are postbacks and /ingest (/p)")
    ap.add_argument("--batch", type=float, default=0.1, help="share that arrive in /batch requests")
    ap.add_argument("--events-per-month", type=float, default=100e6)
    ap.add_argument("--queries-per-month", type=float, default=10_000, help="POST /api/query answered by Lambda")
    ap.add_argument("--batch-size", type=float, default=100, help="events per /batch request (the SDKs' default)")
    ap.add_argument("--short-link-share", type=float, default=0.25, help="share of clicks on short links /t/<tu_id>")
    ap.add_argument("--cache-hit", type=float, default=None, help="isolate cache hit rate (measured.json's guess)")
    ap.add_argument("--active-records", type=float, default=100,
                    help="tenants, short links and tokens requested at least once a minute (each refilled into KV)")
    ap.add_argument("--retry-rate", type=float, default=0.0, help="queue deliveries retried per message")
    ap.add_argument("--coalesce", type=float, default=None,
                    help="clicks (and pixels) per message in the second column, instead of the window's estimate")
    ap.add_argument("--coalesce-ms", type=float, default=None, help="the Worker's COALESCE_MS (measured.json: code)")
    ap.add_argument("--isolates", type=float, default=None,
                    help="isolates the clicks and pixels are spread over at any moment (measured.json's guess)")
    ap.add_argument("--locations", type=float, default=None,
                    help="locations serving traffic, each reading a record from KV once per KV_FILL_TTL_SECS")
    ap.add_argument("--hot-tier", choices=["turso", "self-hosted"], default="turso",
                    help="hot-tier database: Turso (as infra/ defines it) or a self-hosted sqld (2 more vCPU)")
    ap.add_argument("--fleet-floor-vcpu", type=float, default=None, help="vCPU always on (measured.json: k8s prod)")
    ap.add_argument("--archive-partitions", type=float, default=None, help="tenant-day partitions per commit")
    ap.add_argument("--retention-months", type=float, default=12, help="months the archive keeps an event")
    ap.add_argument("--measured", default=os.path.join(ROOT, "infra", "cost", "measured.json"))
    ap.add_argument("--prices", default=os.path.join(ROOT, "infra", "cost", "prices.json"))
    a = ap.parse_args()
    measured, prices = load(a.measured), load(a.prices)
    fig = {k: v["value"] for k, v in measured["figures"].items()}
    # options left unset take measured.json's figure
    for option, figure in (("cache_hit", "isolate_cache_hit_rate"), ("fleet_floor_vcpu", "fleet_floor_vcpu"),
                           ("archive_partitions", "archive_partitions_per_commit"), ("coalesce_ms", "coalesce_ms"),
                           ("isolates", "isolates_serving"), ("locations", "locations_serving")):
        if getattr(a, option) is None:
            setattr(a, option, fig[figure])
    if a.batch_size < 1 or (a.coalesce is not None and a.coalesce < 1) or a.isolates < 1 or a.coalesce_ms < 0:
        sys.exit("error: --batch-size, --coalesce and --isolates must be at least 1, --coalesce-ms not negative")
    model = Model(measured, prices, a)
    events = a.events_per_month
    mix = normalised_mix(a)

    factor = coalesce_factor(a, events)
    today, joined = model.usage(events, 1), model.usage(events, factor)
    all_in = (model.costs(today, True), model.costs(joined, True))
    marginal = (model.costs(today, False), model.costs(joined, False))

    print(f"mix: clicks {mix['clicks']:.0%}, pixels {mix['pixels']:.0%}, postbacks {mix['postbacks']:.0%}, "
          f"batch {mix['batch']:.0%} (/batch of {a.batch_size:g}); {human(events)} events and "
          f"{human(a.queries_per_month)} queries a month; prices read {prices['read_on']}")
    how = "set" if a.coalesce is not None else f"COALESCE_MS={a.coalesce_ms:g} over {a.isolates:g} isolates"
    print(f"queue messages a month: {human(today['queue_messages'])} one per click, "
          f"{human(joined['queue_messages'])} coalesced ({factor:.2f} clicks and pixels a message, {how}); "
          f"hot tier: {a.hot_tier}")
    print()
    print("columns: all in, one message per click ($/month, $/M); all in as deployed (coalesced, $/month, $/M); "
          "marginal as deployed ($/M)")
    print(f"{'component':<22} {'each $/month':>13} {'$/M':>8} {'deployed $/month':>17} {'$/M':>8} {'marginal $/M':>13}")
    print("-" * 86)
    for name in all_in[0]:
        print(f"{name:<22} {all_in[0][name]:>13,.2f} {per_million(all_in[0][name], events):>8.4f} "
              f"{all_in[1][name]:>17,.2f} {per_million(all_in[1][name], events):>8.4f} "
              f"{per_million(marginal[1][name], events):>13.4f}")
    print("-" * 86)
    totals = [sum(c.values()) for c in all_in]
    margins = [sum(c.values()) for c in marginal]
    print(f"{'total':<22} {totals[0]:>13,.2f} {per_million(totals[0], events):>8.4f} "
          f"{totals[1]:>17,.2f} {per_million(totals[1], events):>8.4f} {per_million(margins[1], events):>13.4f}")
    print()
    print(f"total per million events, all in: ${per_million(totals[1], events):.3f} as deployed "
          f"(${per_million(totals[0], events):.3f} with one message per click; goal: under ${GOAL:.2f})")
    print(f"marginal per million events (list prices, no plan fees, allowances or fleet floor): "
          f"${per_million(margins[1], events):.3f} as deployed, ${per_million(margins[0], events):.3f} one message "
          f"per click")
    req = model.p["workers_request"]["value"]
    ops = model.ops_per_message(1) * 3 * model.p["queues_operation"]["value"]
    print(f"one click: Worker request ${req:.2f}/M, its queue message ${ops:.2f}/M (write, read, delete): "
          f"{ops / req:.1f}x the request")
    do_req = model.p["durable_object_request"]["value"]
    busy = MONTH_SECS * 0.128 * model.p["durable_object_gb_second"]["value"] / 1e6
    print(f"coalescing through a Durable Object per location would add ${do_req:.2f}/M clicks (one request each) "
          f"and ${busy:.2f}/month per location kept busy all month (128 MB of wall-clock time)")
    for label, n in (("one message per click", 1), ("as deployed", a.coalesce)):
        volume = break_even(model, n)
        where = f"from about {human(volume)} events a month" if volume else "at no volume up to 10^13 a month"
        print(f"all in under ${GOAL:.2f}/M ({label}): {where}")


if __name__ == "__main__":
    main()
