"""Sustained load on an all-in-one node (`tests/bench/all-in-one.sh`): the hot tier's lag while ingest goes on.

Offers RATE events/s to `POST /batch` (1,000-event batches from CONNECTIONS threads, each on a schedule, so a slow
answer delays that thread's next batch, never the offered rate's clock) for SECONDS, while the node runs every
consumer in-process (filter, stats, webhooks, the archiver). Once a second it reads how many events the hot tier
counts (`/api/events/stats`), and the lag is what the node acknowledged and the hot tier does not count yet. After
the load it waits (up to CATCH_UP seconds) for the lag to reach zero.

Prints one table row: the offered and acknowledged rates (the node's own ingest, the baseline), the hot tier's rate
over the load, the lag at its end and how fast it grew over the load's second half (events/s: near zero when the
tier keeps up), the time to catch up, and the node's peak RSS. Timings are printed, never asserted.
"""

import http.client
import json
import sys
import threading
import time

port, token, api_key, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rate, seconds, connections, catch_up = (int(a) for a in sys.argv[5:9])

SIZE = 1000
ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def body(n):
    """Batch `n`: clicks with their own click ids over 1,000 addresses, a conversion for every third; no
    timestamps, so the node stamps each event when it takes it, as live traffic is."""
    events = []
    for i in range(SIZE):
        k = n * SIZE + i
        if k % 3 == 2:
            events.append({"event_type": "postback", "params": {"click_id": f"c{k - 2}", "payout": "2.50"}})
        else:
            events.append({"event_type": "click", "ip": f"198.51.{k % 4}.{k % 250}", "user_agent": ua,
                           "params": {"click_id": f"c{k}", "sub1": f"source{k % 10}"}})
    return json.dumps(events).encode()


# the node mints each event's id, so a body sent again is 1,000 new events
bodies = [body(n) for n in range(64)]
acked = 0
errors = []
lock = threading.Lock()
start = time.time() + 1.0
per_thread = rate / SIZE / connections  # batches/s each thread offers


def sender(t):
    global acked
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    n = 0
    while True:
        due = start + n / per_thread
        if due >= start + seconds:
            return
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        c.request("POST", "/batch", bodies[(n * connections + t) % len(bodies)],
                  {"authorization": f"Bearer {token}", "content-type": "application/json"})
        r = c.getresponse()
        r.read()
        with lock:
            if r.status == 200:
                acked += SIZE
            else:
                errors.append(r.status)
        n += 1


def hot_total(c):
    c.request("GET", "/api/events/stats?hours=24", headers={"authorization": f"Bearer {api_key}"})
    r = c.getresponse()
    data = r.read()
    return json.loads(data)["total"] if r.status == 200 else None


threads = [threading.Thread(target=sender, args=(t,), daemon=True) for t in range(connections)]
for t in threads:
    t.start()
q = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
samples = []  # (seconds since start, acknowledged, in the hot tier)
time.sleep(max(0.0, start - time.time()))
while any(t.is_alive() for t in threads):
    time.sleep(1.0)
    total = hot_total(q)
    if total is not None:
        samples.append((time.time() - start, acked, total))
load_end = time.time() - start
end_acked = acked
hot_at_end = samples[-1][2] if samples else 0
caught_up = None
while time.time() - start < load_end + catch_up:
    total = hot_total(q)
    if total is not None and total >= end_acked:
        caught_up = time.time() - start - load_end
        break
    time.sleep(0.5)

rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM"))
half = [s for s in samples if s[0] >= load_end / 2]
growth = 0.0
if len(half) >= 2:
    (t0, a0, h0), (t1, a1, h1) = half[0], half[-1]
    growth = ((a1 - h1) - (a0 - h0)) / (t1 - t0)
lag_end = end_acked - hot_at_end
catch = f"{caught_up:.1f} s" if caught_up is not None else f"not within {catch_up} s"
print(f"| {rate:,} events/s for {seconds} s | {end_acked / load_end:,.0f} | {hot_at_end / load_end:,.0f} | "
      f"{lag_end:,} | {growth:+,.0f}/s | {catch} | {rss // 1024} MB | {len(errors)} |")
print(f"{rate:,} events/s offered:", file=sys.stderr)
for t, a, h in samples[:: max(1, len(samples) // 6)]:
    print(f"  at {t:5.1f} s: acknowledged {a:,}, in the hot tier {h:,}, lag {a - h:,}", file=sys.stderr)
