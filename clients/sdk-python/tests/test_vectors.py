"""The SDK against the platform's own test vectors (tests/vectors/links.json, written by the Rust protocol crate)."""

import datetime as dt
import doctest
import json
import unittest
from pathlib import Path

import tracker_sdk
from tracker_sdk import LinkKey, TrackerError, api, links, webhook

ROOT = Path(__file__).resolve().parents[3]
VECTORS = json.loads((ROOT / "tests/vectors/links.json").read_text())
BASE = "https://track.example"


def key_for(build):
    if build["kid"] == "global":
        g = VECTORS["keys"]["global"]
        return LinkKey(build["key_prefix"] or "", "global", g["hmac_secret"], g["encryption_key"])
    k = next(k for k in VECTORS["keys"][build["key_prefix"]] if k["kid"] == build["kid"])
    return LinkKey(build["key_prefix"], k["kid"], k["signing_secret"], k["encryption_key"])


class Vectors(unittest.TestCase):
    def test_every_link_in_the_vectors_is_built_byte_for_byte(self):
        self.assertGreaterEqual(len(VECTORS["builds"]), 8)
        self.assertTrue(any(b["kind"] == "impression" for b in VECTORS["builds"]), "the vectors have pixel builds")
        for b in VECTORS["builds"]:
            key = key_for(b)
            params = [tuple(p) for p in b["params"]]
            nonce = bytes.fromhex(b["nonce"]) if "nonce" in b else None
            fmt = b["format"]
            if fmt == "v2_signed":
                # each kind by its own builder, and the same link by the generic one
                options = {"expires_at": b["expires_at"], "ext": b["ext"]}
                url = {
                    "click": lambda: tracker_sdk.click_url(BASE, key, b["target"], params, **options),
                    "short": lambda: tracker_sdk.short_link_url(BASE, key, b["target"], params, **options),
                    "postback": lambda: tracker_sdk.postback_url(BASE, key, params, **options),
                    "impression": lambda: tracker_sdk.pixel_url(BASE, key, params, **options),
                }[b["kind"]]()
                generic = tracker_sdk.signed_link(BASE, key, b["kind"], b["target"], params, **options)
                self.assertEqual(generic, url, b["name"])
            elif fmt == "v2_encrypted":
                url = tracker_sdk.encrypted_click_url(BASE, key, b["target"], params, ext=b["ext"], nonce=nonce)
            elif fmt == "v1_signed":
                url = tracker_sdk.v1_signed_url(BASE, key.secret, b["key_prefix"], b["target"], params)
            elif fmt == "v1_short":
                url = tracker_sdk.v1_short_url(BASE, key.secret, b["key_prefix"], b["target"], params)
            elif fmt == "v1_encrypted":
                url = tracker_sdk.v1_encrypted_url(BASE, key.encryption_key, b["target"], params, nonce=nonce)
            else:
                self.fail(f"unknown format {fmt}")
            self.assertEqual(url, b["url"], b["name"])

    def test_an_expiry_given_as_a_datetime_is_the_same_link(self):
        b = next(b for b in VECTORS["builds"] if b["format"] == "v2_signed" and b["expires_at"])
        at = dt.datetime.fromtimestamp(b["expires_at"], tz=dt.timezone.utc)
        params = [tuple(p) for p in b["params"]]
        self.assertEqual(tracker_sdk.click_url(BASE, key_for(b), b["target"], params, expires_at=at, ext=b["ext"]), b["url"])

    def test_the_v2_message_is_the_one_the_protocol_signs(self):
        i = VECTORS["v2_message"]["input"]
        got = tracker_sdk.v2_message(i["kind"], i["key_prefix"], i["kid"], i["target"], i["exp"], i["ext"], [tuple(p) for p in i["params"]])
        self.assertEqual(got.decode(), VECTORS["v2_message"]["message_utf8"])

    def test_links_the_platform_would_refuse_are_refused_with_its_codes(self):
        key = key_for(VECTORS["builds"][0])
        cases = [
            (lambda: tracker_sdk.click_url(BASE, key, "https://a.example/", {"sig": "x"}), "reserved_param"),
            (lambda: tracker_sdk.click_url(BASE, key, "https://a.example/", [("a", "1"), ("a", "2")]), "duplicate_param"),
            (lambda: tracker_sdk.click_url(BASE, key, "https://a.example/", {"gclid": "x"}, ext=["gclid"]), "reserved_param"),
            (lambda: tracker_sdk.click_url(BASE, key, "https://a.example/", expires_at=-5), "invalid_expiry"),
            (lambda: tracker_sdk.short_link_url(BASE, key, "tu_nope"), "invalid_short_link_id"),
            (lambda: tracker_sdk.click_url(BASE, LinkKey("A", "k1", "s"), "https://a.example/"), "invalid_key_prefix"),
            (lambda: tracker_sdk.encrypted_click_url(BASE, LinkKey("ab", "k1"), "https://a.example/"), "malformed_ciphertext"),
        ]
        for build, code in cases:
            with self.assertRaises(TrackerError) as caught:
                build()
            self.assertEqual(caught.exception.code, code)

    def test_destinations_a_click_would_refuse_make_no_link(self):
        key = LinkKey("acme", "k1", "s", "11" * 32)
        self.assertGreaterEqual(len(VECTORS["destinations"]), 20)

        def code_of(build):
            try:
                build()
            except TrackerError as e:
                return e.code
            return None

        for case in VECTORS["destinations"]:
            d = case["destination"]
            with self.subTest(destination=d):
                self.assertEqual(code_of(lambda: tracker_sdk.click_url(BASE, key, d)), case["new_link"])
                self.assertEqual(code_of(lambda: tracker_sdk.encrypted_click_url(BASE, key, d)), case["new_link"])
                self.assertEqual(code_of(lambda: tracker_sdk.v1_signed_url(BASE, "s", "acme", d)), case["click"])
                self.assertEqual(code_of(lambda: tracker_sdk.v1_encrypted_url(BASE, "22" * 32, d)), case["click"])

    def test_encrypted_links_use_a_fresh_nonce_and_v1_blobs_open_only_with_their_key(self):
        b = next(b for b in VECTORS["builds"] if b["format"] == "v2_encrypted")
        key = key_for(b)
        self.assertNotEqual(tracker_sdk.encrypted_click_url(BASE, key, "https://a.example/"), tracker_sdk.encrypted_click_url(BASE, key, "https://a.example/"))
        g = VECTORS["keys"]["global"]["encryption_key"]
        url = tracker_sdk.v1_encrypted_url(BASE, g, "https://hidden.example/ü")
        blob = url.split("d=")[1]
        self.assertEqual(tracker_sdk.v1_decrypt(g, blob), "https://hidden.example/ü")
        with self.assertRaises(TrackerError) as caught:
            tracker_sdk.v1_decrypt(VECTORS["keys"]["6vct"][0]["encryption_key"], blob)
        self.assertEqual(caught.exception.code, "decryption_failed")

    def test_form_encoding_is_the_platforms(self):
        self.assertEqual(links.url_with("https://t.example/", "/p", [("a b", "~*-._é&=+")]), "https://t.example/p?a+b=%7E*-._%C3%A9%26%3D%2B")

    def test_webhook_signatures_are_verified_as_the_platform_signs_them(self):
        w = VECTORS["webhook_signatures"]
        codes = {"malformed": "malformed_signature", "stale": "stale_signature", "mismatch": "invalid_signature"}
        for c in w["cases"]:
            with self.subTest(c["name"]):
                verify = lambda: tracker_sdk.verify_webhook(w["secret"], c["header"], c["body"].encode(), now=c["now"], tolerance_seconds=w["tolerance_secs"])  # noqa: E731
                if c["expect"] == "ok":
                    self.assertIsInstance(verify(), int)
                else:
                    with self.assertRaises(TrackerError) as caught:
                        verify()
                    self.assertEqual(caught.exception.code, codes[c["expect"]])
        ok = next(c for c in w["cases"] if c["expect"] == "ok")
        t = int(ok["header"].split(",")[0][2:])
        self.assertEqual(tracker_sdk.sign_webhook(w["secret"], t, ok["body"]), ok["header"])


def load_tests(loader, tests, ignore):
    # the examples in the docstrings run too
    for module in (api, links, webhook):
        tests.addTests(doctest.DocTestSuite(module, optionflags=doctest.ELLIPSIS))
    return tests


if __name__ == "__main__":
    unittest.main()
