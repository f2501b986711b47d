"""Logging, AutoMTLS certificates, and the process around a plugin."""

import base64
import json
import logging
import os
import subprocess
import sys
import unittest

from restpipe_plugin import automtls, goplugin, log

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LogTest(unittest.TestCase):
    def test_hclog_line(self):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        h = log.HclogHandler("digest", w)
        lg = logging.getLogger("test.hclog")
        lg.propagate = False
        lg.addHandler(h)
        lg.setLevel(logging.DEBUG)
        lg.warning("hello %s", "there", extra={"answer": 42})
        try:
            raise ValueError("boom")
        except ValueError:
            lg.exception("failed")
        os.close(w)
        lines = os.read(r, 1 << 16).decode().splitlines()
        a, b = (json.loads(x) for x in lines)
        self.assertEqual((a["@level"], a["@message"], a["@module"], a["answer"], a["logger"]),
                         ("warn", "hello there", "digest", 42, "test.hclog"))
        # go-plugin parses exactly this layout: 2006-01-02T15:04:05.000000Z07:00
        self.assertRegex(a["@timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertEqual((b["@level"], b["error"]), ("error", "ValueError: boom"))
        self.assertIn("Traceback", b["traceback"])

    def test_levels(self):
        self.assertEqual([log.hclog_level(x) for x in (5, 10, 20, 30, 40, 50)], ["trace", "debug", "info", "warn", "error", "error"])
        self.assertEqual(log.level_from_env({"RESTPIPE_PLUGIN_LOG_LEVEL": "warn"}), logging.WARNING)
        self.assertEqual(log.level_from_env({}), logging.INFO)
        self.assertEqual(log.level_from_env({"RESTPIPE_PLUGIN_LOG_LEVEL": "trace"}), log.TRACE)


def der_read(b, i=0):
    """Returns (tag, content, next index) of the DER element at b[i]."""
    tag = b[i]
    n = b[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(b[i:i + k], "big")
        i += k
    return tag, b[i:i + n], i + n


def der_items(b):
    i = 0
    while i < len(b):
        tag, content, i = der_read(b, i)
        yield tag, content


class AutoMTLSTest(unittest.TestCase):
    def test_curve(self):
        self.assertTrue(automtls.on_curve(automtls._G))
        two = automtls._mul(2, automtls._G)
        self.assertEqual(two[0], 0x7CF27B188D034F7E8A52380304B51AC3C08969E277F21B35A60B48FC47669978)
        with self.assertRaises(ValueError):
            automtls._mul(automtls._N, automtls._G)

    def test_sign_verify(self):
        d, q = automtls.generate_key()
        self.assertTrue(automtls.on_curve(q))
        sig = automtls.sign(d, b"message")
        self.assertTrue(automtls.verify(q, b"message", sig))
        self.assertFalse(automtls.verify(q, b"messagf", sig))

    def test_certificate_is_self_signed_for_localhost(self):
        cert_pem, key_pem, field = automtls.server_identity()
        der = base64.b64decode(field + "=" * (-len(field) % 4))
        self.assertIn(b"-----BEGIN CERTIFICATE-----", cert_pem)
        self.assertIn(b"-----BEGIN EC PRIVATE KEY-----", key_pem)
        self.assertNotIn("=", field)
        tag, cert, _ = der_read(der)
        tbs_tag, tbs, end = der_read(cert)
        tbs_raw = cert[:end]
        items = list(der_items(cert))
        self.assertEqual(len(items), 3)
        sig = list(der_items(items[2][1][1:]))[0][1]
        r, s = (int.from_bytes(c, "big") for _, c in der_items(sig))
        spki = list(der_items(tbs))[6][1]
        point = list(der_items(spki))[1][1][1:]
        q = (int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))
        self.assertTrue(automtls.verify(q, tbs_raw, (r, s)), "the certificate's signature does not verify with its own key")
        self.assertIn(b"localhost", tbs)


class ProcessTest(unittest.TestCase):
    def run_script(self, src, env=None):
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": SDK}
        e.update(env or {})
        return subprocess.run([sys.executable, "-c", src], env=e, capture_output=True, timeout=60)

    def test_run_by_hand(self):
        out = self.run_script("from restpipe_plugin import Plugin\np = Plugin('x', '1')\np.handle('get', 'x', print)\np.serve()")
        self.assertEqual(out.returncode, 1)
        self.assertIn(b"not meant to be run by hand", out.stderr)
        self.assertEqual(out.stdout, b"")

    def test_handshake_line(self):
        self.assertEqual(goplugin.handshake_line("/d/plugin1"), "1|2|unix|/d/plugin1|grpc|\n")

    def test_stdout_is_guarded_under_a_node(self):
        # Under a node, what the plugin prints never reaches descriptor 1,
        # which stays the handshake's; it goes (here, with no node to
        # stream it to) to standard error.
        src = ("import os, sys, subprocess\n"
               "from restpipe_plugin import stdio\n"
               "hs = stdio.guard()\n"
               "print('printed'); sys.stdout.write('written\\n'); os.write(1, b'raw\\n')\n"
               "subprocess.run(['sh', '-c', 'echo from a child'])\n"
               "print('to stderr', file=sys.stderr)\n"
               "os.write(hs, b'1|2|unix|/x|grpc|\\n')\n"
               "import time; time.sleep(0.3); stdio.flush_to_stderr()\n")
        out = self.run_script(src, {"RESTPIPE_PLUGIN": goplugin.MAGIC_COOKIE_VALUE})
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, b"1|2|unix|/x|grpc|\n")
        for s in (b"printed", b"written", b"raw", b"from a child", b"to stderr"):
            self.assertIn(s, out.stderr)

    def test_import_failure_is_logged_as_an_error(self):
        src = "import restpipe_plugin\nimport no_such_module_here\n"
        out = self.run_script(src, {"RESTPIPE_PLUGIN": goplugin.MAGIC_COOKIE_VALUE})
        self.assertEqual(out.returncode, 1)
        lines = [json.loads(x) for x in out.stderr.decode().splitlines() if x.startswith("{")]
        self.assertTrue(any(x["@level"] == "error" and "No module named 'no_such_module_here'" in x["@message"] for x in lines),
                        out.stderr)
        self.assertEqual(out.stdout, b"")


if __name__ == "__main__":
    unittest.main()
