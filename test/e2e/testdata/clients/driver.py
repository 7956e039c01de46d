"""Drives the Python recipes of docs/clients.md for the end-to-end suite.

One command a line on standard input, one JSON answer a line on standard output:
  verify                          GET $AUTH_URL/v1/auth/verify through meterr_request
  webhook BODY_FILE SIG [legacy]  verify_webhook with $WEBHOOK_SECRET and $WEBHOOK_SECRET_PREVIOUS
It prints key ids, never keys.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "docs", "clients", "python"))
sys.dont_write_bytecode = True

from meterr_key import meterr_request  # noqa: E402
from verify_webhook import verify_webhook  # noqa: E402

secrets = [s for s in (os.environ.get("WEBHOOK_SECRET"), os.environ.get("WEBHOOK_SECRET_PREVIOUS")) if s]

for line in sys.stdin:
    cmd, *args = line.split()
    try:
        if cmd == "verify":
            resp = meterr_request("GET", os.environ["AUTH_URL"] + "/v1/auth/verify", timeout=10)
            body = resp.json()
            out = {"status": resp.status_code, "key_id": body.get("key_id", ""), "code": (body.get("error") or {}).get("code", "")}
        elif cmd == "webhook":
            with open(args[0], "rb") as f:
                out = {"ok": verify_webhook(f.read(), args[1], secrets, allow_legacy=args[2:] == ["legacy"])}
        else:
            out = {"error": "unknown command " + cmd}
    except Exception as err:  # reported to the test, which fails on it
        out = {"error": str(err)}
    print(json.dumps(out), flush=True)
