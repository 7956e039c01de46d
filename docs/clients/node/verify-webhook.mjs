// Verifies the X-Meterr-Signature header of a meterr webhook, for Node >= 18.
// It accepts several signing secrets, so a secret can be rotated with an
// overlap: pass [current, previous] until every sender uses the current one.
import { createHmac, timingSafeEqual } from 'node:crypto';

const HEX_MAC = /^[0-9a-fA-F]{64}$/;

// verifyWebhook checks header against rawBody: the body exactly as received
// (a Buffer or string), never JSON.stringify(req.body), which changes as soon
// as key order or spacing differ. It accepts "t=<unix>,v1=<hex>[,v1=...]"
// within toleranceSeconds of now, and the bare hex form only with allowLegacy
// (it has no timestamp, so it can be replayed).
export function verifyWebhook(rawBody, header, secrets, { toleranceSeconds = 300, allowLegacy = false, now = Date.now() } = {}) {
  if (!header || secrets.length === 0 || secrets.some((s) => !s)) return false;
  const body = Buffer.isBuffer(rawBody) ? rawBody : Buffer.from(rawBody, 'utf8');
  let prefix = '';
  const macs = [];
  if (!header.includes('=')) {
    if (!allowLegacy) return false;
    macs.push(header.trim());
  } else {
    let t = null;
    for (const field of header.split(',')) {
      const i = field.indexOf('=');
      if (i <= 0) return false;
      const [k, v] = [field.slice(0, i).trim(), field.slice(i + 1).trim()];
      if (k === 't' && /^\d{1,19}$/.test(v) && t === null) t = v;
      else if (k === 'v1') macs.push(v);
      else if (k === 't') return false;
    }
    if (t === null || Math.abs(now / 1000 - Number(t)) > toleranceSeconds) return false;
    prefix = `${t}.`;
  }
  let ok = false;
  for (const secret of secrets) {
    const want = createHmac('sha256', secret).update(prefix).update(body).digest();
    for (const mac of macs) {
      if (HEX_MAC.test(mac) && timingSafeEqual(want, Buffer.from(mac, 'hex'))) ok = true;
    }
  }
  return ok;
}
