"""The batch client against a scripted HTTP server (a real one, through urllib) and scripted senders."""

import json
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tracker_sdk import TrackerClient, TrackerError, retry_after_seconds

UUID7 = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


class Scripted:
    """A server answering each request with the next of ``answers`` (status, headers, body); records requests."""

    def __init__(self, answers=()):
        self.answers, self.requests = list(answers), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "at": time.monotonic()})
                status, headers, answer = outer.answers.pop(0) if outer.answers else (200, {}, None)
                data = json.dumps(answer or {"accepted": len(json.loads(body)), "rejected": []}).encode()
                self.send_response(status)
                for k, v in {"content-type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Client(unittest.TestCase):
    def test_batches_by_size_with_token_ids_and_one_idempotency_key_each(self):
        s = Scripted()
        client = TrackerClient(s.url + "/", "trk_ing_x", batch_size=2, flush_interval=0)
        for n in (1, 2, 3):
            self.assertTrue(client.track({"event_type": "signup", "params": {"n": str(n)}}))
        client.close()
        s.close()
        self.assertEqual(len(s.requests), 2)
        first, second = s.requests
        self.assertEqual(first["path"], "/batch")
        self.assertEqual(first["headers"]["authorization"], "Bearer trk_ing_x")
        self.assertNotEqual(first["headers"]["idempotency-key"], second["headers"]["idempotency-key"])
        events = json.loads(first["body"]) + json.loads(second["body"])
        self.assertEqual([e["params"]["n"] for e in events], ["1", "2", "3"])
        for e in events:
            self.assertRegex(e["event_id"], UUID7)
            self.assertLess(abs(e["timestamp"] - time.time() * 1000), 10_000)

    def test_retries_keep_key_and_body_and_wait_for_retry_after(self):
        s = Scripted([(503, {}, {"error": {"code": "unavailable", "message": "down"}}), (429, {"retry-after": "1"}, {"error": {"code": "rate_limited", "message": "slow"}})])
        client = TrackerClient(s.url, "t", flush_interval=0, initial_backoff=0.01)
        client.track({"event_type": "a"})
        self.assertEqual(client.flush(), 1)
        client.close()
        s.close()
        self.assertEqual(len(s.requests), 3)
        self.assertEqual(len({r["headers"]["idempotency-key"] for r in s.requests}), 1)
        self.assertEqual(len({r["body"] for r in s.requests}), 1)
        self.assertGreaterEqual(s.requests[2]["at"] - s.requests[1]["at"], 0.95)

    def test_a_final_refusal_is_not_retried_and_reaches_on_error(self):
        s = Scripted([(400, {}, {"error": {"code": "invalid_json", "message": "bad"}})])
        failed = []
        client = TrackerClient(s.url, "t", flush_interval=0, on_error=lambda e, events: failed.append((e, events)))
        client.track({"event_type": "a"})
        with self.assertRaises(TrackerError) as caught:
            client.flush()
        client.close()
        s.close()
        self.assertEqual((caught.exception.code, caught.exception.status), ("invalid_json", 400))
        self.assertEqual(len(s.requests), 1)
        self.assertEqual(failed[0][1][0]["event_type"], "a")

    def test_a_retry_after_beyond_the_limit_ends_the_attempts(self):
        calls = []

        def send(url, headers, body):
            calls.append(url)
            return 429, {"Retry-After": "86400"}, b'{"error":{"code":"quota_exceeded","message":"cap"}}'

        client = TrackerClient("https://t.example", "t", flush_interval=0, send=send)
        client.track({"event_type": "a"})
        with self.assertRaises(TrackerError) as caught:
            client.flush()
        client.close()
        self.assertEqual(caught.exception.code, "quota_exceeded")
        self.assertEqual(len(calls), 1)

    def test_network_errors_are_retried_up_to_max_attempts(self):
        calls = []

        def send(url, headers, body):
            calls.append(url)
            raise ConnectionRefusedError("refused")

        client = TrackerClient("https://t.example", "t", flush_interval=0, max_attempts=3, initial_backoff=0.001, send=send)
        client.track({"event_type": "a"})
        with self.assertRaises(TrackerError):
            client.flush()
        client.close()
        self.assertEqual(len(calls), 3)

    def test_a_full_queue_refuses_new_events_and_says_so(self):
        dropped = []
        client = TrackerClient("https://t.example", "t", flush_interval=0, max_queue=2, on_drop=lambda e: dropped.append(e["event_type"]), send=lambda *a: (200, {}, b'{"accepted":0}'))
        self.assertTrue(client.track({"event_type": "a"}))
        self.assertTrue(client.track({"event_type": "b"}))
        self.assertFalse(client.track({"event_type": "c"}))
        self.assertEqual(dropped, ["c"])
        self.assertEqual(client.pending, 2)
        client.close()

    def test_the_interval_sends_on_its_own_and_close_refuses_later_events(self):
        s = Scripted()
        client = TrackerClient(s.url, "t", flush_interval=0.05)
        client.track({"event_type": "a"})
        deadline = time.monotonic() + 5
        while not s.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(len(s.requests), 1)
        client.close()
        self.assertFalse(client.track({"event_type": "b"}))
        s.close()

    def test_retry_after_as_seconds_or_date(self):
        self.assertEqual(retry_after_seconds("3"), 3.0)
        self.assertGreater(retry_after_seconds(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))), 30)
        self.assertIsNone(retry_after_seconds("soon"))
        self.assertIsNone(retry_after_seconds(None))


if __name__ == "__main__":
    unittest.main()
