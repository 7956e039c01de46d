// Drives the Node recipes of docs/clients.md for the end-to-end suite: one
// command a line on standard input, one JSON answer a line on standard output.
//   verify                          GET $AUTH_URL/v1/auth/verify through meterrFetch
//   webhook BODY_FILE SIG [legacy]  verifyWebhook with $WEBHOOK_SECRET and $WEBHOOK_SECRET_PREVIOUS
// It prints key ids, never keys.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const recipes = new URL('../../../../docs/clients/node/', import.meta.url);
const { meterrFetch } = await import(new URL('meterr-key.mjs', recipes));
const { verifyWebhook } = await import(new URL('verify-webhook.mjs', recipes));

const secrets = [process.env.WEBHOOK_SECRET, process.env.WEBHOOK_SECRET_PREVIOUS].filter(Boolean);

for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, ...args] = line.trim().split(/\s+/);
  let out;
  try {
    if (cmd === 'verify') {
      const res = await meterrFetch(`${process.env.AUTH_URL}/v1/auth/verify`);
      const body = await res.json();
      out = { status: res.status, key_id: body.key_id || '', code: body.error?.code || '' };
    } else if (cmd === 'webhook') {
      const ok = verifyWebhook(readFileSync(args[0]), args[1], secrets, { allowLegacy: args[2] === 'legacy' });
      out = { ok };
    } else {
      out = { error: `unknown command ${cmd}` };
    }
  } catch (err) {
    out = { error: String(err.message || err) };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}
