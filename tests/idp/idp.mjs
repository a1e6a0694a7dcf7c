#!/usr/bin/env node
// A real OpenID provider for Portcullis tests and the demo: the npm `oidc-provider`
// (no fake IdP) on loopback, with our own login page and a small admin API so tests can
// change a user at the IdP (groups, claims, disabled) and watch Portcullis follow.
//
// Usage (all optional; see tests/idp/README.md for the full reference):
//   node tests/idp/idp.mjs [--config file.json] [--host 127.0.0.1] [--port 0]
//     [--issuer URL] [--access-token-ttl 60] [--id-token-ttl 60]
//     [--refresh-token-ttl 86400] [--no-rotate-refresh-tokens]
//     [--client id:secret:redirect_uri[,redirect_uri...]]...
//     [--user username:password:email:name[:group,group...]]...
// Environment: IDP_CONFIG (JSON, same shape as --config), IDP_PORT, IDP_HOST, IDP_ISSUER.
//
// Prints exactly one line `READY <issuer>` on stdout once listening; everything else
// goes to stderr. Port 0 picks a free port (read it from the READY line).
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { parseArgs } from 'node:util';

// oidc-provider 9 warns on every start that node 20 is not its preferred runtime; we run
// node 20 on purpose (it works, see selftest.mjs), so drop exactly that line.
const warn = console.warn;
console.warn = (...a) => {
  if (!String(a[0]).includes('Unsupported runtime')) warn(...a);
};
const { default: Provider } = await import('oidc-provider');
console.warn = warn;

// ---- configuration ---------------------------------------------------------------------

const { values: args } = parseArgs({
  options: {
    config: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    issuer: { type: 'string' },
    'access-token-ttl': { type: 'string' },
    'id-token-ttl': { type: 'string' },
    'refresh-token-ttl': { type: 'string' },
    'no-rotate-refresh-tokens': { type: 'boolean' },
    client: { type: 'string', multiple: true },
    user: { type: 'string', multiple: true },
  },
  strict: true,
});

function die(message) {
  process.stderr.write(`idp: ${message}\n`);
  process.exit(2);
}

let fileConfig = {};
if (args.config) {
  try {
    fileConfig = JSON.parse(fs.readFileSync(args.config, 'utf8'));
  } catch (e) {
    die(`cannot read --config ${args.config}: ${e.message}`);
  }
} else if (process.env.IDP_CONFIG) {
  try {
    fileConfig = JSON.parse(process.env.IDP_CONFIG);
  } catch (e) {
    die(`IDP_CONFIG is not JSON: ${e.message}`);
  }
}

function num(value, name, fallback) {
  if (value === undefined || value === null || value === '') return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) die(`${name} must be a non-negative integer, got ${value}`);
  return n;
}

const host = args.host ?? process.env.IDP_HOST ?? fileConfig.host ?? '127.0.0.1';
const port = num(args.port ?? process.env.IDP_PORT ?? fileConfig.port, 'port', 0);
const ttl = {
  accessToken: num(args['access-token-ttl'] ?? fileConfig.access_token_ttl, 'access-token-ttl', 60),
  idToken: num(args['id-token-ttl'] ?? fileConfig.id_token_ttl, 'id-token-ttl', 60),
  refreshToken: num(args['refresh-token-ttl'] ?? fileConfig.refresh_token_ttl, 'refresh-token-ttl', 86400),
};
const rotateRefreshTokens = args['no-rotate-refresh-tokens']
  ? false
  : (fileConfig.rotate_refresh_tokens ?? true);

// Clients: `--client id:secret:uri,uri` or config `clients: [{client_id, client_secret,
// redirect_uris, post_logout_redirect_uris?, token_endpoint_auth_method?}]`.
function parseClientFlag(spec) {
  const first = spec.indexOf(':');
  const second = spec.indexOf(':', first + 1);
  if (first < 0 || second < 0) die(`--client must be id:secret:redirect_uri[,uri...], got ${spec}`);
  return {
    client_id: spec.slice(0, first),
    client_secret: spec.slice(first + 1, second),
    redirect_uris: spec.slice(second + 1).split(',').filter(Boolean),
  };
}

const clientSpecs = [
  ...(fileConfig.clients ?? []),
  ...(args.client ?? []).map(parseClientFlag),
];
if (clientSpecs.length === 0) {
  clientSpecs.push({
    client_id: 'portcullis',
    client_secret: 'portcullis-secret',
    redirect_uris: ['http://127.0.0.1:8000/oauth2/callback'],
  });
}

function postLogoutDefaults(redirectUris) {
  // Portcullis returns to `<authenticate origin>/.pomerium/signed_out` after sign-out.
  const out = new Set();
  for (const uri of redirectUris) {
    try {
      const u = new URL(uri);
      out.add(`${u.origin}/.pomerium/signed_out`);
      out.add(`${u.origin}/`);
    } catch {
      die(`invalid redirect uri ${uri}`);
    }
  }
  return [...out];
}

const clients = clientSpecs.map((c) => {
  if (!c.client_id || !c.client_secret || !Array.isArray(c.redirect_uris) || c.redirect_uris.length === 0) {
    die(`client needs client_id, client_secret and redirect_uris: ${JSON.stringify(c)}`);
  }
  return {
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? postLogoutDefaults(c.redirect_uris),
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
  };
});

// Users: `--user name:password:email:Full Name:group,group` or config
// `users: {name: {password, email, name, groups: [], claims: {...extra}}}`.
function parseUserFlag(spec) {
  const parts = spec.split(':');
  if (parts.length < 4) die(`--user must be username:password:email:name[:groups], got ${spec}`);
  const [id, password, email, name, groups = ''] = parts;
  return [id, { password, email, name, groups: groups.split(',').filter(Boolean) }];
}

const defaultUsers = {
  alice: { password: 'alice-password', email: 'alice@example.com', name: 'Alice Example', groups: ['admins', 'staff'] },
  bob: { password: 'bob-password', email: 'bob@example.com', name: 'Bob Example', groups: ['staff'] },
};
const userSpecs = {
  ...(fileConfig.users ?? ((args.user ?? []).length ? {} : defaultUsers)),
  ...Object.fromEntries((args.user ?? []).map(parseUserFlag)),
};

function normaliseUser(id, u) {
  if (typeof u.password !== 'string') die(`user ${id} needs a password`);
  return {
    id,
    password: u.password,
    email: u.email ?? `${id}@example.com`,
    name: u.name ?? id,
    groups: [...(u.groups ?? [])],
    claims: { ...(u.claims ?? {}) },
    disabled: Boolean(u.disabled),
  };
}

const initialUsers = () => new Map(Object.entries(userSpecs).map(([id, u]) => [id, normaliseUser(id, u)]));
let users = initialUsers();

// Claim names released with the `profile` scope besides the standard ones: every extra
// claim a configured user has (a provider only releases claims it declares).
const extraClaimNames = new Set(['department']);
for (const u of users.values()) for (const k of Object.keys(u.claims)) extraClaimNames.add(k);

// ---- storage (in memory, deterministic: no LRU eviction) ------------------------------

const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
const byUid = new Map(); // session uid -> id
const byUserCode = new Map();
const byGrant = new Map(); // grantId -> Set of `${model}:${id}`

function alive(entry) {
  return entry && (entry.expiresAt === undefined || entry.expiresAt > Date.now());
}

class MemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    store.set(key, { payload, expiresAt });
    if (payload.uid) byUid.set(payload.uid, id);
    if (payload.userCode) byUserCode.set(payload.userCode, id);
    if (payload.grantId) {
      if (!byGrant.has(payload.grantId)) byGrant.set(payload.grantId, new Set());
      byGrant.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    const entry = store.get(this.key(id));
    return alive(entry) ? entry.payload : undefined;
  }

  async findByUid(uid) {
    const id = byUid.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = byUserCode.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of byGrant.get(grantId) ?? []) store.delete(key);
    byGrant.delete(grantId);
  }
}

// ---- signing keys (generated at start; rotation via the admin API) --------------------

let keyCounter = 0;
function newSigningKey() {
  keyCounter += 1;
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `idp-key-${keyCounter}`, alg: 'RS256', use: 'sig' };
}
// Newest first: oidc-provider signs with the first matching key and publishes all.
let signingKeys = [newSigningKey()];

// ---- the provider ----------------------------------------------------------------------

const stats = { grants: {}, userinfo: 0, userinfo_failed: 0, logins: 0, end_session: 0 };
const cookieKeys = [crypto.randomBytes(32).toString('hex')];

function htmlEscape(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

const STYLE = `body{font-family:system-ui,sans-serif;background:#f3f4f6;margin:0;padding:3rem 1rem;color:#111827}
.card{max-width:22rem;margin:0 auto;background:#fff;border-radius:.5rem;box-shadow:0 1px 3px rgba(0,0,0,.15);padding:1.5rem 2rem}
h1{font-size:1.25rem;margin:0 0 1rem}label{display:block;margin:.75rem 0 .25rem;font-size:.9rem}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;border:1px solid #d1d5db;border-radius:.25rem}
button{margin-top:1rem;width:100%;padding:.6rem;border:0;border-radius:.25rem;background:#2563eb;color:#fff;font-weight:600;cursor:pointer}
.error{color:#b91c1c;font-size:.9rem}.muted{color:#6b7280;font-size:.8rem}`;

function page(title, body) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>${htmlEscape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>${STYLE}</style></head>
<body><div class="card">${body}</div></body></html>`;
}

function accountClaims(user) {
  return {
    sub: user.id,
    email: user.email,
    email_verified: true,
    name: user.name,
    preferred_username: user.id,
    groups: [...user.groups],
    ...user.claims,
  };
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    adapter: MemoryAdapter,
    clients,
    jwks: { keys: signingKeys },
    cookies: { keys: cookieKeys },
    // Scope → claims. `groups` rides with `profile` (so the default Pomerium scopes see
    // it) and also has a scope of its own.
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups', ...extraClaimNames],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    // Put scope claims into the ID token too (not only user info), like most real IdPs.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        // Auto-confirm (end the IdP session too); the form stays for clients without JS.
        logoutSource: async (ctx, form) => {
          ctx.body = page('Sign out', `<h1>Signing you out…</h1>${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<script>(function(){var f=document.getElementById('op.logoutForm');var i=document.createElement('input');i.type='hidden';i.name='logout';i.value='yes';f.appendChild(i);f.submit();})();</script>`);
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.body = page('Signed out', '<h1>You are signed out of the identity provider.</h1>');
        },
      },
      revocation: { enabled: true },
    },
    pkce: { required: () => true },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => rotateRefreshTokens,
    ttl: {
      AccessToken: ttl.accessToken,
      IdToken: ttl.idToken,
      RefreshToken: ttl.refreshToken,
      AuthorizationCode: 60,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // A disabled or deleted user has no account: refresh → invalid_grant, user info → 401.
    findAccount: async (_ctx, sub) => {
      const user = users.get(sub);
      if (!user || user.disabled) return undefined;
      return { accountId: sub, claims: async () => accountClaims(user) };
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Identity provider error</h1>${Object.entries(out)
        .map(([k, v]) => `<p><strong>${htmlEscape(k)}</strong>: ${htmlEscape(v)}</p>`)
        .join('')}`);
    },
  });
  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params.grant_type;
    stats.grants[type] = (stats.grants[type] ?? 0) + 1;
  });
  provider.on('end_session.success', () => {
    stats.end_session += 1;
  });
  provider.on('server_error', (_ctx, err) => process.stderr.write(`idp: server_error ${err.stack}\n`));
  return provider;
}

// ---- interactions: our login form, consent granted automatically -----------------------

async function readBody(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function grantAll(provider, details, accountId) {
  const { params } = details;
  let grant;
  if (details.grantId) grant = await provider.Grant.find(details.grantId);
  if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  return grant.save();
}

function loginForm(uid, clientId, error) {
  return page('Sign in', `<h1>Sign in</h1>
<p class="muted">to continue to <strong>${htmlEscape(clientId)}</strong></p>
${error ? `<p class="error">${htmlEscape(error)}</p>` : ''}
<form method="post" action="/interaction/${htmlEscape(uid)}/login" autocomplete="off">
<label for="username">Username</label><input id="username" type="text" name="username" required autofocus>
<label for="password">Password</label><input id="password" type="password" name="password" required>
<button type="submit">Sign in</button></form>`);
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function handleInteraction(provider, req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (e) {
    return send(res, 400, 'text/html; charset=utf-8', page('Error', `<h1>Login expired</h1><p>${htmlEscape(e.message)}</p>`));
  }
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch\n');
  const { prompt, params } = details;

  if (prompt.name === 'consent') {
    // Already signed in at the IdP: grant what the client asked for, no page.
    const grantId = await grantAll(provider, details, details.session.accountId);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  if (req.method === 'GET' && !action) {
    return send(res, 200, 'text/html; charset=utf-8', loginForm(uid, params.client_id));
  }
  if (req.method === 'POST' && action === 'login') {
    const form = new URLSearchParams(await readBody(req));
    const user = users.get(form.get('username') ?? '');
    const password = Buffer.from(form.get('password') ?? '');
    const ok = user && !user.disabled && password.length === Buffer.byteLength(user.password)
      && crypto.timingSafeEqual(password, Buffer.from(user.password));
    if (!ok) {
      return send(res, 200, 'text/html; charset=utf-8', loginForm(uid, params.client_id, 'Invalid username or password.'));
    }
    stats.logins += 1;
    const grantId = await grantAll(provider, details, user.id);
    return provider.interactionFinished(
      req,
      res,
      { login: { accountId: user.id }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
  }
  return send(res, 405, 'text/plain', 'method not allowed\n');
}

// ---- admin API (loopback only, for tests and the demo) ---------------------------------

function json(res, status, value) {
  send(res, status, 'application/json', `${JSON.stringify(value)}\n`);
}

function publicUser(u) {
  return { id: u.id, email: u.email, name: u.name, groups: u.groups, claims: u.claims, disabled: u.disabled };
}

async function handleAdmin(req, res, parts) {
  // parts: path segments after /admin
  const method = req.method;
  if (parts.length === 1 && parts[0] === 'health') return json(res, 200, { ok: true });
  if (parts.length === 1 && parts[0] === 'stats' && method === 'GET') return json(res, 200, stats);
  if (parts.length === 1 && parts[0] === 'reset' && method === 'POST') {
    users = initialUsers();
    return json(res, 200, { users: [...users.values()].map(publicUser) });
  }
  if (parts.length === 1 && parts[0] === 'rotate-keys' && method === 'POST') {
    // New key first (signs from now on); the previous one stays published.
    signingKeys = [newSigningKey(), ...signingKeys].slice(0, 3);
    install(buildProvider(issuer));
    return json(res, 200, { kids: signingKeys.map((k) => k.kid) });
  }
  if (parts[0] !== 'users') return json(res, 404, { error: 'not found' });

  if (parts.length === 1) {
    if (method === 'GET') return json(res, 200, [...users.values()].map(publicUser));
    if (method === 'POST') {
      const body = JSON.parse(await readBody(req));
      if (!body.id || users.has(body.id)) return json(res, 400, { error: 'id missing or taken' });
      const user = normaliseUser(body.id, body);
      users.set(user.id, user);
      return json(res, 201, publicUser(user));
    }
    return json(res, 405, { error: 'method not allowed' });
  }

  const user = users.get(decodeURIComponent(parts[1]));
  if (!user) return json(res, 404, { error: 'no such user' });
  const rest = parts.slice(2);

  if (rest.length === 0) {
    if (method === 'GET') return json(res, 200, publicUser(user));
    if (method === 'DELETE') {
      users.delete(user.id);
      return json(res, 200, { deleted: user.id });
    }
    if (method === 'PATCH') {
      // {email?, name?, groups?, claims?: {k: v | null}} — null removes a claim.
      const body = JSON.parse(await readBody(req));
      if (typeof body.email === 'string') user.email = body.email;
      if (typeof body.name === 'string') user.name = body.name;
      if (Array.isArray(body.groups)) user.groups = body.groups.map(String);
      for (const [k, v] of Object.entries(body.claims ?? {})) {
        if (v === null) delete user.claims[k];
        else user.claims[k] = v;
      }
      return json(res, 200, publicUser(user));
    }
  }
  if (rest.length === 1 && method === 'POST' && (rest[0] === 'disable' || rest[0] === 'enable')) {
    user.disabled = rest[0] === 'disable';
    return json(res, 200, publicUser(user));
  }
  if (rest[0] === 'groups') {
    if (rest.length === 1 && method === 'PUT') {
      const body = JSON.parse(await readBody(req));
      if (!Array.isArray(body)) return json(res, 400, { error: 'expected a JSON array of group names' });
      user.groups = body.map(String);
      return json(res, 200, publicUser(user));
    }
    if (rest.length === 2) {
      const group = decodeURIComponent(rest[1]);
      if (method === 'POST' || method === 'PUT') {
        if (!user.groups.includes(group)) user.groups.push(group);
        return json(res, 200, publicUser(user));
      }
      if (method === 'DELETE') {
        user.groups = user.groups.filter((g) => g !== group);
        return json(res, 200, publicUser(user));
      }
    }
  }
  return json(res, 404, { error: 'not found' });
}

// ---- server ------------------------------------------------------------------------------

let issuer;
let current;
let currentHandler;

function install(provider) {
  current = provider;
  currentHandler = provider.callback();
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://idp.invalid');
    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] === 'admin') return await handleAdmin(req, res, parts.slice(1));
    if (parts[0] === 'interaction' && parts.length >= 2 && parts.length <= 3) {
      return await handleInteraction(current, req, res, parts[1], parts[2]);
    }
    if (url.pathname === '/me') {
      res.on('finish', () => {
        if (res.statusCode === 200) stats.userinfo += 1;
        else stats.userinfo_failed += 1;
      });
    }
    return currentHandler(req, res);
  } catch (e) {
    process.stderr.write(`idp: ${e.stack}\n`);
    if (!res.headersSent) json(res, e instanceof SyntaxError ? 400 : 500, { error: e.message });
    else res.end();
  }
});

server.on('error', (e) => die(`cannot listen on ${host}:${port}: ${e.message}`));
server.listen(port, host, () => {
  const actual = server.address().port;
  issuer = args.issuer ?? process.env.IDP_ISSUER ?? fileConfig.issuer ?? `http://${host}:${actual}`;
  install(buildProvider(issuer));
  process.stdout.write(`READY ${issuer}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
// Die with the parent: tests pipe our stdin and never write to it.
if (process.env.IDP_EXIT_ON_STDIN_CLOSE === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
