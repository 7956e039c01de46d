// The meterr API key from the Secret that meterr-operator delivers, for
// Node >= 18 with no dependencies. currentKey() re-reads the mounted file
// whenever it changed (the kubelet swaps it in place on every rotation), so
// call it per request instead of reading the key once at start-up.
import { readFileSync, realpathSync, statSync } from 'node:fs';

const KEY_PATH = process.env.METERR_API_KEY_FILE || '/var/run/secrets/meterr/api-key';
const KEY_RE = /^mtr_(live|test)_[0-9A-Za-z]{46}$/;
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function crc32(bytes) {
  let crc = ~0;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return ~crc >>> 0;
}

// isWellFormed checks the published format and the key's CRC32 checksum (its
// last 6 characters), so a half-written or mistyped key is never sent.
export function isWellFormed(key) {
  if (!KEY_RE.test(key)) return false;
  let sum = crc32(Buffer.from(key.slice(0, 49)));
  let enc = '';
  for (let i = 0; i < 6; i++, sum = Math.floor(sum / 62)) enc = BASE62[sum % 62] + enc;
  return enc === key.slice(49);
}

let cached = { stamp: '', key: '' };

// currentKey returns the key in the mounted file (or, with no file, in
// METERR_API_KEY from envFrom). A file that does not hold a well-formed key
// is not used: the key read before keeps serving until a good one appears.
export function currentKey() {
  let st;
  try {
    st = statSync(KEY_PATH); // follows api-key -> ..data/api-key
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
    if (cached.key) return cached.key; // the mount went away: keep the last key
    const env = (process.env.METERR_API_KEY || '').trim();
    if (!isWellFormed(env)) throw new Error(`meterr: no API key in ${KEY_PATH} or METERR_API_KEY`);
    return env;
  }
  // The real path names the kubelet's timestamped directory: new on every swap.
  const stamp = `${realpathSync(KEY_PATH)}:${st.ino}:${st.mtimeMs}:${st.size}`;
  if (stamp !== cached.stamp) {
    const key = readFileSync(KEY_PATH, 'utf8').trim();
    if (isWellFormed(key)) cached = { stamp, key };
  }
  if (!cached.key) throw new Error(`meterr: ${KEY_PATH} holds no well-formed API key`);
  return cached.key;
}

// meterrFetch is fetch with "Authorization: Bearer <current key>". When the
// answer is 401 expired_api_key or invalid_api_key (the key was rotated) and
// the file now holds another key, it retries once with that key, unless the
// body is a stream, which cannot be sent twice.
export async function meterrFetch(url, init = {}) {
  const send = (key) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${key}`);
    return fetch(url, { ...init, headers });
  };
  const key = currentKey();
  const res = await send(key);
  if (res.status !== 401 || typeof init.body?.getReader === 'function') return res;
  const code = await res.clone().json().then((b) => b?.error?.code, () => '');
  if (code !== 'expired_api_key' && code !== 'invalid_api_key') return res;
  const fresh = currentKey();
  if (fresh === key) return res;
  await res.body?.cancel();
  return send(fresh);
}
