#!/usr/bin/env node
// Self-test of idp.mjs (no Portcullis involved): spawns it, runs an authorization-code
// flow with PKCE through our login form, refreshes, changes the user through the admin
// API, rotates keys and disables the user. `node tests/idp/selftest.mjs` → "selftest ok".
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('./idp.mjs', import.meta.url));
const redirect = 'http://127.0.0.2:9/oauth2/callback';
const child = spawn(process.execPath, [script, '--port', '0', '--access-token-ttl', '30',
  '--client', `c1:s1:${redirect}`, '--user', 'alice:pw:alice@example.com:Alice:admins,staff'], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const issuer = await new Promise((resolve, reject) => {
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    const m = buf.match(/^READY (\S+)$/m);
    if (m) resolve(m[1]);
  });
  child.on('exit', (code) => reject(new Error(`idp exited ${code}`)));
});

try {
  const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  assert.equal(disco.issuer, issuer);
  assert.ok(disco.end_session_endpoint);

  const jar = new Map();
  const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  async function go(url, init = {}) {
    const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers ?? {}), cookie: cookieHeader() } });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      jar.set(pair.slice(0, i), pair.slice(i + 1));
    }
    return res;
  }

  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const auth = new URL(disco.authorization_endpoint);
  Object.entries({ client_id: 'c1', response_type: 'code', redirect_uri: redirect, scope: 'openid profile email offline_access',
    state: 'st', nonce: 'nn', code_challenge: challenge, code_challenge_method: 'S256' }).forEach(([k, v]) => auth.searchParams.set(k, v));
  let res = await go(auth);
  assert.equal(res.status, 303, await res.text());
  const interaction = new URL(res.headers.get('location'), issuer);
  res = await go(interaction);
  assert.match(await res.text(), /name="password"/);
  res = await go(`${interaction}/login`, { method: 'POST', body: new URLSearchParams({ username: 'alice', password: 'wrong' }) });
  assert.match(await res.text(), /Invalid username or password/);
  res = await go(`${interaction}/login`, { method: 'POST', body: new URLSearchParams({ username: 'alice', password: 'pw' }) });
  assert.equal(res.status, 303);
  let loc = new URL(res.headers.get('location'), issuer);
  while (!loc.href.startsWith(redirect)) {
    res = await go(loc);
    assert.ok([302, 303].includes(res.status), `${loc} → ${res.status} ${await res.text()}`);
    loc = new URL(res.headers.get('location'), issuer);
  }
  const code = loc.searchParams.get('code');
  assert.ok(code);
  const basic = `Basic ${Buffer.from('c1:s1').toString('base64')}`;
  const token = async (body) => fetch(disco.token_endpoint, { method: 'POST', headers: { authorization: basic }, body: new URLSearchParams(body) });
  res = await token({ grant_type: 'authorization_code', code, redirect_uri: redirect, code_verifier: verifier });
  let tokens = await res.json();
  assert.equal(res.status, 200, JSON.stringify(tokens));
  assert.ok(tokens.refresh_token);
  const idClaims = JSON.parse(Buffer.from(tokens.id_token.split('.')[1], 'base64url'));
  assert.deepEqual(idClaims.groups, ['admins', 'staff']);
  assert.equal(idClaims.nonce, 'nn');
  assert.equal(tokens.expires_in, 30);

  const userinfo = async (at) => fetch(disco.userinfo_endpoint, { headers: { authorization: `Bearer ${at}` } });
  assert.deepEqual((await (await userinfo(tokens.access_token)).json()).groups, ['admins', 'staff']);

  const admin = (method, path, body) => fetch(`${issuer}/admin${path}`, { method, body: body && JSON.stringify(body) });
  assert.equal((await admin('DELETE', '/users/alice/groups/admins')).status, 200);
  assert.deepEqual((await (await userinfo(tokens.access_token)).json()).groups, ['staff']);

  assert.equal((await admin('POST', '/rotate-keys')).status, 200);
  res = await token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token });
  const refreshed = await res.json();
  assert.equal(res.status, 200, JSON.stringify(refreshed));
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'rotated');
  const header = JSON.parse(Buffer.from(refreshed.id_token.split('.')[0], 'base64url'));
  assert.equal(header.kid, 'idp-key-2');
  const jwks = await (await fetch(disco.jwks_uri)).json();
  assert.deepEqual(jwks.keys.map((k) => k.kid), ['idp-key-2', 'idp-key-1']);
  tokens = refreshed;

  await admin('POST', '/users/alice/disable');
  assert.equal((await userinfo(tokens.access_token)).status, 401);
  res = await token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token });
  assert.equal((await res.json()).error, 'invalid_grant');
  await admin('POST', '/reset');
  assert.equal((await userinfo(tokens.access_token)).status, 200);

  const end = new URL(disco.end_session_endpoint);
  end.searchParams.set('id_token_hint', tokens.id_token);
  end.searchParams.set('post_logout_redirect_uri', 'http://127.0.0.2:9/.pomerium/signed_out');
  res = await go(end);
  const html = await res.text();
  assert.equal(res.status, 200, html);
  const action = html.match(/action="([^"]+)"/)[1];
  const xsrf = html.match(/name="xsrf" value="([^"]+)"/)[1];
  res = await go(new URL(action, issuer), { method: 'POST', body: new URLSearchParams({ xsrf, logout: 'yes' }) });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get('location'), 'http://127.0.0.2:9/.pomerium/signed_out');
  const stats = await (await admin('GET', '/stats')).json();
  assert.equal(stats.grants.refresh_token, 1);
  console.log('selftest ok');
} finally {
  child.kill();
}
