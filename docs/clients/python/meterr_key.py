"""The meterr API key from the Secret that meterr-operator delivers.

current_key() re-reads the mounted file whenever it changed (the kubelet swaps
it in place on every rotation), so call it per request instead of reading the
key once at start-up. Python 3 and requests.
"""
import os
import re
import threading
import zlib

import requests

KEY_PATH = os.environ.get("METERR_API_KEY_FILE", "/var/run/secrets/meterr/api-key")
_KEY_RE = re.compile(r"mtr_(live|test)_[0-9A-Za-z]{46}")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_lock = threading.Lock()
_cached = {"stamp": None, "key": ""}


def is_well_formed(key):
    """The published format and the key's CRC32 checksum (its last 6 characters)."""
    if not _KEY_RE.fullmatch(key):
        return False
    total, enc = zlib.crc32(key[:49].encode()), ""
    for _ in range(6):
        total, digit = divmod(total, 62)
        enc = _BASE62[digit] + enc
    return enc == key[49:]


def current_key():
    """The key in the mounted file (or, with no file, in METERR_API_KEY from envFrom).

    A file that does not hold a well-formed key is not used: the key read
    before keeps serving until a good one appears.
    """
    with _lock:
        try:
            st = os.stat(KEY_PATH)  # follows api-key -> ..data/api-key
        except FileNotFoundError:
            if _cached["key"]:
                return _cached["key"]  # the mount went away: keep the last key
            env = os.environ.get("METERR_API_KEY", "").strip()
            if not is_well_formed(env):
                raise RuntimeError(f"meterr: no API key in {KEY_PATH} or METERR_API_KEY") from None
            return env
        # The real path names the kubelet's timestamped directory: new on every swap.
        stamp = (os.path.realpath(KEY_PATH), st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != _cached["stamp"]:
            with open(KEY_PATH, encoding="ascii", errors="replace") as f:
                key = f.read(4096).strip()
            if is_well_formed(key):
                _cached.update(stamp=stamp, key=key)
        if not _cached["key"]:
            raise RuntimeError(f"meterr: {KEY_PATH} holds no well-formed API key")
        return _cached["key"]


def meterr_request(method, url, session=requests, **kwargs):
    """requests.request with "Authorization: Bearer <current key>".

    When the answer is 401 expired_api_key or invalid_api_key (the key was
    rotated) and the file now holds another key, it retries once with that
    key, unless the body is a file, a generator or an upload, which may not be
    sent twice.
    """
    headers = dict(kwargs.pop("headers", None) or {})

    def send(key):
        return session.request(method, url, headers={**headers, "Authorization": f"Bearer {key}"}, **kwargs)

    key = current_key()
    resp = send(key)
    data = kwargs.get("data")
    if resp.status_code != 401 or hasattr(data, "read") or hasattr(data, "__next__") or kwargs.get("files"):
        return resp
    try:
        code = resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return resp
    fresh = current_key()
    if code not in ("expired_api_key", "invalid_api_key") or fresh == key:
        return resp
    resp.close()
    return send(fresh)
