"""Verifies the X-Meterr-Signature header of a meterr webhook, Python 3 standard library.

It accepts several signing secrets, so a secret can be rotated with an
overlap: pass [current, previous] until every sender uses the current one.
"""
import hashlib
import hmac
import re
import time

_HEX_MAC = re.compile(r"[0-9a-fA-F]{64}")


def verify_webhook(raw_body, header, secrets, tolerance_seconds=300, allow_legacy=False, now=None):
    """Checks header against raw_body: the bytes exactly as received, never a re-serialised JSON.

    Accepts "t=<unix>,v1=<hex>[,v1=...]" within tolerance_seconds of now, and
    the bare hex form only with allow_legacy (it has no timestamp, so it can
    be replayed).
    """
    if not header or not secrets or not all(secrets):
        return False
    body = raw_body if isinstance(raw_body, bytes) else raw_body.encode()
    prefix, macs = b"", []
    if "=" not in header:
        if not allow_legacy:
            return False
        macs.append(header.strip())
    else:
        t = None
        for field in header.split(","):
            k, sep, v = (part.strip() for part in field.partition("="))
            if not sep or not k:
                return False
            if k == "t" and t is None and re.fullmatch(r"\d{1,19}", v):
                t = v
            elif k == "t":
                return False
            elif k == "v1":
                macs.append(v)
        now = time.time() if now is None else now
        if t is None or abs(now - int(t)) > tolerance_seconds:
            return False
        prefix = t.encode() + b"."
    ok = False
    for secret in secrets:
        key = secret if isinstance(secret, bytes) else secret.encode()
        want = hmac.new(key, prefix + body, hashlib.sha256).hexdigest()
        for mac in macs:
            if _HEX_MAC.fullmatch(mac) and hmac.compare_digest(want, mac.lower()):
                ok = True
    return ok
