"""Contract test: a running server answers as contract/greet.json says."""

import json
import os
import threading
import unittest
import urllib.error
import urllib.request

from app.server import serve

HERE = os.path.dirname(os.path.abspath(__file__))
CONTRACT = os.path.join(HERE, "..", "..", "contract", "greet.json")


class ContractTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = serve(0)
        cls.port = cls.server.server_address[1]
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()
        with open(CONTRACT, encoding="utf-8") as f:
            cls.contract = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def fetch(self, path):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.headers.get("Content-Type"), json.load(resp)
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type"), json.load(err)

    def test_every_interaction_matches(self):
        for case in self.contract["interactions"]:
            with self.subTest(case["path"]):
                status, ctype, body = self.fetch(case["path"])
                self.assertEqual(status, case["status"])
                self.assertEqual(ctype, "application/json")
                self.assertEqual(sorted(body), sorted(case["fields"]))
                for field, value in case.get("equals", {}).items():
                    self.assertEqual(body[field], value)


if __name__ == "__main__":
    unittest.main()
