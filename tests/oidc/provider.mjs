// A real OpenID Provider (panva's oidc-provider) for the Rust tests: `node tests/oidc/provider.mjs`.
//
// Environment (all optional):
//   PORT                 port on 127.0.0.1 (default 0: any free port); the issuer is
//                        http://127.0.0.1:<port>, no trailing slash
//   OIDC_KEYS            JSON file of the private signing JWKs: loaded when present, else
//                        generated (RS256, ES256, EdDSA) and written, so a restart serves the
//                        same keys and tokens minted before it still verify
//   GATEPASS_SECRET      secret of client `gatepass` (introspection; browser sign-in when it has
//                        redirect URIs)
//   MCP_CLIENT_SECRET    secret of client `mcp-client` (client_credentials, revocation;
//                        may ask for `mcp:read mcp:write`; its tokens carry role developer)
//   MCP_VIEWER_SECRET    secret of client `mcp-viewer` (client_credentials, `mcp:read` only)
//   EXTRA_RESOURCES      more RFC 8707 resource indicators, space-separated absolute URIs (e.g.
//                        the e2e stack's `http://127.0.0.1:<port>/mcp`): each gets RS256
//                        `at+jwt` access tokens with `aud` = the URI, like the fixed ones below
//   REDIRECT_URIS        space-separated redirect URIs of `gatepass` (http://127.0.0.1:<port>/...
//                        is fine). Without any, `gatepass` only introspects (no sign-in).
//   POST_LOGOUT_REDIRECT_URIS  space-separated post-logout redirect URIs of `gatepass`
//   BACKCHANNEL_LOGOUT_URI     `gatepass`'s OIDC Back-Channel Logout URI (127.0.0.1 is fine:
//                        this provider lifts the library's SSRF guard, see `fetch` below)
//   SIGNIN_RESOURCE      the resource (`aud`) of `gatepass`'s sign-in access tokens when the
//                        authorization request names none (default https://app.example.test);
//                        also accepted as an explicit `resource`
//   ACCESS_TOKEN_TTL     lifetime in seconds of sign-in (code / refresh) access tokens (default
//                        600; client_credentials tokens keep 600)
//   USERS_FILE           JSON file [{username, password, role, email?}] replacing the default
//                        users alice (admin), bob (viewer), carol (developer), whose passwords
//                        are `<name>-password`; email defaults to <username>@example.test
//
// Browser sign-in (client `gatepass`): authorization code + PKCE (S256, required),
// client_secret_basic. The interaction pages are this file's own (not devInteractions):
//   GET  /interaction/:uid         login page ("Sign in"; inputs #username #password, #submit)
//   POST /interaction/:uid/login   form username, password: wrong -> the page again with
//                                  "Invalid username or password"; right -> login and consent
//                                  in one go (no consent page), back to the redirect_uri
//   POST /interaction/:uid/abort   the user cancels: the RP gets error=access_denied
// Access tokens of the code and refresh grants are RS256 `at+jwt` with `aud` = the resource and
// the user's `role`, `preferred_username`, `email` and the provider session's `sid`; ID tokens
// carry `nonce` and `sid`. With `offline_access` requested (no prompt=consent needed) the code
// grant also returns a refresh token; refresh tokens rotate on every use, and reusing a rotated
// one answers invalid_grant (and revokes the whole grant: that is oidc-provider's reuse
// detection). These tokens live as long as the provider session (no offline_access reaches the
// code, see interactionUrl): after logout they answer invalid_grant. RP-initiated logout:
// /session/end shows a form whose button #logout-confirm ("Sign out") ends the session, sends
// back-channel logout and redirects to the registered post_logout_redirect_uri.
//
// Prints `oidc-provider listening on http://127.0.0.1:<port>` once it serves. Besides the
// provider's own routes, the same port answers a few test-only routes (handled before the
// provider, because oidc-provider fixes its keystore and clients at construction: a change
// builds a new Provider on the same in-memory storage, so sessions, grants and opaque tokens
// survive it). Bodies and answers are JSON:
//   POST /test/rotate        adds a new RS256 key as the first key (it signs from then on)
//   POST /test/retire        keeps only the newest key of each alg
//   GET  /test/kids          [{kid, alg}] in keystore order (also the answer of the two above)
//   POST /test/logout-token  {sub?, sid?, aud} -> {logout_token}: a Back-Channel Logout token
//   GET  /test/client        -> {redirect_uris, post_logout_redirect_uris, backchannel_logout_uri}
//   POST /test/client        {redirect_uris?, post_logout_redirect_uris?, backchannel_logout_uri?}
//                            replaces those of `gatepass` (arrays or space-separated strings;
//                            backchannel_logout_uri null removes it) -> the same as GET
//   POST /test/ttl           {access_token: seconds} -> {access_token}: sign-in token lifetime
//   GET  /test/grants        -> {authorization_code, refresh_token, client_credentials, ...}:
//                            successful token-endpoint grants so far, by grant_type
//   GET  /test/end-sessions  -> {count, last: {id_token_hint_present, client_id,
//                            post_logout_redirect_uri} | null}: requests to /session/end
//   POST /test/refresh-fail  {mode: "invalid_grant" | "unavailable" | "off"} -> {mode}: until
//                            "off", refresh_token grants answer 400 invalid_grant or 503
//                            temporarily_unavailable (nothing is consumed)
//   POST /test/next-id-token {aud} -> {aud}: the next ID token issued has this `aud` instead of
//                            the client id (once; null cancels)
//   POST /test/backchannel   {sub, end_session?} -> {sent, statuses}: the provider sends its own
//                            Back-Channel Logout (logout+jwt with sub and sid) to `gatepass`'s
//                            backchannel_logout_uri for every provider session of `sub`; answers
//                            after the POSTs, with their HTTP statuses (or "error: ..." when
//                            none came). end_session: true also ends those provider sessions.
// A test route that fails answers 400 {error, error_description?}.
// SIGTERM closes the server and exits 0.

import { AsyncLocalStorage } from 'node:async_hooks';
import { createPrivateKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';

import { SignJWT, importJWK } from 'jose';
import Provider, { errors } from 'oidc-provider';
// The library's memory adapter, used without a store of its own: every Provider built here
// then shares the module's one storage (the default gives each Provider a fresh one).
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

const port = Number(process.env.PORT ?? 0);
const keysFile = process.env.OIDC_KEYS;
const gatepassSecret = process.env.GATEPASS_SECRET ?? 'gatepass-introspection-secret';
const mcpSecret = process.env.MCP_CLIENT_SECRET ?? 'mcp-client-secret';
const viewerSecret = process.env.MCP_VIEWER_SECRET ?? 'mcp-viewer-secret';
const SCOPES = 'mcp:read mcp:write';
const SIGNIN_CLIENT = 'gatepass';
// What sign-in access tokens may say in `scope` (the OIDC scopes the user granted).
const SIGNIN_SCOPES = 'openid profile email';

function absoluteUris(name, value) {
  const uris = (Array.isArray(value) ? value : String(value ?? '').split(/\s+/)).filter(Boolean);
  for (const uri of uris) {
    const u = new URL(uri); // throws on anything but an absolute URI
    if (u.hash) throw new Error(`${name}: ${uri} has a fragment`);
  }
  return uris;
}

const extraResources = absoluteUris('EXTRA_RESOURCES', process.env.EXTRA_RESOURCES);
const [signinResource] = absoluteUris(
  'SIGNIN_RESOURCE',
  process.env.SIGNIN_RESOURCE || 'https://app.example.test',
);

function seconds(name, value) {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer`);
  return n;
}
let accessTokenTtl = seconds('ACCESS_TOKEN_TTL', process.env.ACCESS_TOKEN_TTL ?? 600);

// `gatepass`'s sign-in registration; POST /test/client replaces parts of it.
let signin = {
  redirect_uris: absoluteUris('REDIRECT_URIS', process.env.REDIRECT_URIS),
  post_logout_redirect_uris: absoluteUris(
    'POST_LOGOUT_REDIRECT_URIS',
    process.env.POST_LOGOUT_REDIRECT_URIS,
  ),
  backchannel_logout_uri:
    absoluteUris('BACKCHANNEL_LOGOUT_URI', process.env.BACKCHANNEL_LOGOUT_URI)[0] ?? null,
};

// ---- users -----------------------------------------------------------------------------------

const DEFAULT_USERS = [
  { username: 'alice', password: 'alice-password', role: 'admin' },
  { username: 'bob', password: 'bob-password', role: 'viewer' },
  { username: 'carol', password: 'carol-password', role: 'developer' },
];

function loadUsers(file) {
  const list = file ? JSON.parse(readFileSync(file, 'utf8')) : DEFAULT_USERS;
  if (!Array.isArray(list)) throw new Error('USERS_FILE must hold a JSON array');
  return new Map(list.map((u) => {
    for (const field of ['username', 'password', 'role']) {
      if (typeof u[field] !== 'string' || !u[field]) {
        throw new Error(`USERS_FILE: every user needs a string ${field}`);
      }
    }
    return [u.username, { email: `${u.username}@example.test`, ...u }];
  }));
}
const users = loadUsers(process.env.USERS_FILE);

// The account as oidc-provider wants it; the provider releases claims by scope (`claims` below).
function findAccount(_ctx, sub) {
  const user = users.get(sub);
  if (!user) return undefined;
  return {
    accountId: sub,
    claims: async () => ({
      sub, preferred_username: user.username, email: user.email, role: user.role,
    }),
  };
}

// ---- keys ------------------------------------------------------------------------------------

function newKey(alg) {
  const [type, opts] = {
    RS256: ['rsa', { modulusLength: 2048 }],
    ES256: ['ec', { namedCurve: 'P-256' }],
    EdDSA: ['ed25519', {}],
  }[alg];
  // DER out of the generator, then a fresh KeyObject for the JWK: on Node 20, exporting the
  // generator's own KeyObject as a JWK can deadlock the main thread (the export holds the key's
  // mutex while allocating; a GC then finalises the generate job, which takes the same mutex).
  // Seen here once in ~40 starts as a provider that never listened.
  const der = { type: 'pkcs8', format: 'der' };
  const { privateKey } = generateKeyPairSync(type, { ...opts, privateKeyEncoding: der,
    publicKeyEncoding: { type: 'spki', format: 'der' } });
  const jwk = createPrivateKey({ key: privateKey, ...der }).export({ format: 'jwk' });
  const kid = `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}`;
  return { ...jwk, kid, alg, use: 'sig' };
}

let keys = keysFile && existsSync(keysFile)
  ? JSON.parse(readFileSync(keysFile, 'utf8'))
  : ['RS256', 'ES256', 'EdDSA'].map(newKey);

function saveKeys() {
  if (keysFile) writeFileSync(keysFile, JSON.stringify(keys), { mode: 0o600 });
}
saveKeys();

// ---- test state (module-level, so it survives rebuilds) ---------------------------------------

const grantCounts = { authorization_code: 0, refresh_token: 0, client_credentials: 0 };
const endSessions = { count: 0, last: null };
let refreshFail = 'off';
let nextIdTokenAud; // undefined: none pending
// Ids of the sessions the provider saved, to find a user's sessions (the memory store has no
// index by account). Stale ids are dropped when found gone.
const sessionIds = new Set();
// Interactions whose authorization request asked for offline_access (see interactionUrl).
const offlineInteractions = new Set();
// Collects the HTTP statuses of the back-channel logout POSTs made inside a run().
const deliveries = new AsyncLocalStorage();

// ---- provider --------------------------------------------------------------------------------

// RFC 8707 resource indicators -> the access token each one gets (RFC 9068 `at+jwt` or opaque).
const jwtResource = (alg, scope = SCOPES) => ({
  scope, accessTokenFormat: 'jwt', jwt: { sign: { alg } },
});
const RESOURCES = {
  'https://api.test/rs256': jwtResource('RS256'),
  'https://api.test/es256': jwtResource('ES256'),
  'https://api.test/eddsa': jwtResource('EdDSA'),
  'https://api.test/opaque': { scope: SCOPES, accessTokenFormat: 'opaque' },
  'https://mcp.example.test/mcp': jwtResource('RS256'),
  ...Object.fromEntries(extraResources.map((r) => [r, jwtResource('RS256')])),
};
// The sign-in resource may also be one of the above (e.g. an e2e stack's URL): it then keeps its
// token format and scopes, and knows the sign-in scopes too.
{
  const known = RESOURCES[signinResource] ?? jwtResource('RS256', '');
  RESOURCES[signinResource] = { ...known, scope: `${known.scope} ${SIGNIN_SCOPES}`.trim() };
}

function gatepassClient() {
  const client = {
    client_id: SIGNIN_CLIENT,
    client_secret: gatepassSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    post_logout_redirect_uris: signin.post_logout_redirect_uris,
    backchannel_logout_session_required: true,
    ...(signin.backchannel_logout_uri && { backchannel_logout_uri: signin.backchannel_logout_uri }),
  };
  if (!signin.redirect_uris.length) {
    // The resource server (gatepass) only authenticates to introspect.
    return { ...client, grant_types: [], response_types: [], redirect_uris: [] };
  }
  return {
    ...client,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: signin.redirect_uris,
  };
}

// offline_access reaches the token endpoint only with prompt=consent (oidc-provider drops it
// from the authorization request otherwise), so the interaction notes it from the raw request
// and the login adds it to the Grant, which issueRefreshToken then reads.
async function interactionUrl(ctx, interaction) {
  const scope = ctx.oidc.body?.scope ?? ctx.query.scope;
  if (String(scope ?? '').split(' ').includes('offline_access')) {
    offlineInteractions.add(interaction.uid);
  }
  return `/interaction/${interaction.uid}`;
}

async function issueRefreshToken(ctx, client, source) {
  if (!client.grantTypeAllowed('refresh_token')) return false;
  const granted = ctx.oidc.entities.Grant?.getOIDCScope().split(' ') ?? [];
  return source.scopes.has('offline_access') || granted.includes('offline_access');
}

// The user's claims in sign-in access tokens, so the RP needs no userinfo call.
async function extraTokenClaims(_ctx, token) {
  // mcp-client's machine tokens act as a developer (mcp-status's WebSocket needs a role).
  if (token.kind === 'ClientCredentials' && token.clientId === 'mcp-client') {
    return { role: 'developer' };
  }
  const user = token.kind === 'AccessToken' && users.get(token.accountId);
  if (!user) return undefined;
  return {
    role: user.role,
    preferred_username: user.username,
    email: user.email,
    ...(token.sid && { sid: token.sid }),
  };
}

// oidc-provider sends outgoing requests (back-channel logout here) through an undici dispatcher
// that destroys connections to special-use addresses (127.0.0.0/8 among them): test only, drop
// it so the RP on 127.0.0.1 gets them. Also records each status for POST /test/backchannel.
async function testFetch(url, { dispatcher: _ssrfGuard, ...options }) {
  const response = await globalThis.fetch(url, options);
  deliveries.getStore()?.push(response.status);
  return response;
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    jwks: { keys },
    adapter: (model) => new MemoryAdapter(model),
    clients: [
      gatepassClient(),
      {
        // The MCP client: machine-to-machine tokens for one resource at a time.
        client_id: 'mcp-client',
        client_secret: mcpSecret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        scope: SCOPES,
      },
      {
        // A second MCP client that may only read: tokens carry `scope: mcp:read` at most (a
        // request for `mcp:write` is refused with invalid_scope).
        client_id: 'mcp-viewer',
        client_secret: viewerSecret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        scope: 'mcp:read',
      },
    ],
    scopes: ['openid', 'offline_access', 'profile', 'email', ...SCOPES.split(' ')],
    claims: {
      acr: null,
      auth_time: null,
      iss: null,
      sid: null,
      openid: ['sub'],
      profile: ['preferred_username', 'role'],
      email: ['email'],
    },
    findAccount,
    cookies: { keys: ['gatepass-oidc-test-cookie-key'] },
    // All given, so the provider prints no "should change" notices.
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: 600,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      Interaction: 3600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
    },
    pkce: { required: () => true },
    issueRefreshToken,
    rotateRefreshToken: true,
    extraTokenClaims,
    interactions: { url: interactionUrl },
    fetch: testFetch,
    renderError,
    // DPoP proofs with RSA keys too (the library's default is ES256 and EdDSA/Ed25519), so
    // gatepass's proof checks meet every family a client may use.
    enabledJWA: {
      dPoPSigningAlgValues: ['ES256', 'Ed25519', 'EdDSA', 'PS256', 'RS256'],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
      // On by default in 9.x. Without a nonceSecret the provider never asks for DPoP nonces
      // (and refuses proofs that carry one). A proof binds the token (`cnf.jkt`, token_type
      // DPoP); without one tokens stay Bearer.
      dPoP: { enabled: true },
      // Any authenticated client may introspect (gatepass does it for tokens of mcp-client).
      introspection: { enabled: true, allowedPolicy: async () => true },
      // RFC 7009: the owning client revokes its own tokens (the library's default policy).
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, client, oneOf) => oneOf
          ?? (client.clientId === SIGNIN_CLIENT ? signinResource : undefined),
        // The code and refresh grants use the authorized resource without a `resource` param.
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          const info = RESOURCES[resource];
          if (!info) throw new errors.InvalidTarget(`unknown resource ${resource}`);
          return { audience: resource, ...info };
        },
      },
    },
  });
  instrument(provider);
  return provider;
}

// Hooks the test routes need on each new Provider.
function instrument(provider) {
  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params.grant_type;
    grantCounts[type] = (grantCounts[type] ?? 0) + 1;
  });
  provider.on('session.saved', (session) => sessionIds.add(session.jti));
  provider.on('session.destroyed', (session) => sessionIds.delete(session.jti));
  provider.on('backchannel.error', (_ctx, err, client) => {
    console.error(`back-channel logout to ${client.backchannelLogoutUri} failed: ${err.message}`);
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error', err));
  // oidc-provider puts `sid` in codes, ID and access tokens only for clients with a
  // backchannel_logout_uri; the RP needs it whether or not one is registered.
  provider.Client.prototype.includeSid = () => true;
  overrideNextIdTokenAudience(provider.IdToken);
  provider.use(countEndSessions);
}

// POST /test/next-id-token: the ID token's `aud` is the client id the library signs with, so
// the next one is issued for a stand-in client whose id is the wanted audience.
function overrideNextIdTokenAudience(IdToken) {
  const { issue } = IdToken.prototype;
  IdToken.prototype.issue = async function issueWithTestAudience(options) {
    if (options?.use !== 'idtoken' || nextIdTokenAud === undefined) {
      return issue.call(this, options);
    }
    const aud = nextIdTokenAud;
    nextIdTokenAud = undefined;
    const { client } = this;
    this.client = new Proxy(client, {
      get(target, prop) {
        if (prop === 'clientId') return aud;
        const value = Reflect.get(target, prop);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    try {
      return await issue.call(this, options);
    } finally {
      this.client = client;
    }
  };
}

// Koa middleware (runs before the provider's router): records what reached the end-session
// endpoint, as sent, whether or not the provider accepted it.
async function countEndSessions(ctx, next) {
  try {
    await next();
  } finally {
    if (ctx.oidc?.route === 'end_session') {
      const sent = { ...ctx.query, ...ctx.oidc.body };
      endSessions.count += 1;
      endSessions.last = {
        id_token_hint_present: Boolean(sent.id_token_hint),
        client_id: ctx.oidc.entities.Client?.clientId ?? sent.client_id ?? null,
        post_logout_redirect_uri: sent.post_logout_redirect_uri ?? null,
      };
    }
  }
}

// ---- pages -----------------------------------------------------------------------------------

const escapeHtml = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const page = (title, body) => `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
${body}
</body></html>
`;

function loginPage(uid, { username = '', error } = {}) {
  const id = encodeURIComponent(uid);
  return page('Sign in - gatepass test provider', `<h1>Sign in</h1>
${error ? `<p id="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${id}/login">
  <label>Username
    <input id="username" name="username" value="${escapeHtml(username)}" autofocus></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button id="submit" type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${id}/abort">
  <button id="cancel" type="submit">Cancel</button>
</form>`);
}

// `form` is the provider's (id op.logoutForm, with its xsrf field); logout=yes ends the whole
// session and notifies every client of it.
async function logoutSource(ctx, form) {
  ctx.body = page('Sign out', `<h1>Sign out</h1>
<p>Sign out of the test provider?</p>
${form}
<button id="logout-confirm" type="submit" form="op.logoutForm" name="logout" value="yes">
  Sign out</button>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.body = page('Signed out', '<h1>Signed out</h1>\n<p id="signed-out">You are signed out.</p>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Error', `<h1>Error</h1>
<p id="error">${escapeHtml(out.error)}: ${escapeHtml(out.error_description)}</p>`);
}

// ---- interactions ----------------------------------------------------------------------------

// Login and consent in one: a Grant with the requested OIDC scopes (and offline_access when it
// was asked for) and, per requested resource, the requested scopes that resource knows.
async function grantFor(details, accountId) {
  const { uid, params, grantId } = details;
  let grant = grantId && await provider.Grant.find(grantId);
  if (!grant || grant.accountId !== accountId) {
    grant = new provider.Grant({ accountId, clientId: params.client_id });
  }
  const scopes = String(params.scope ?? '').split(' ').filter(Boolean);
  if (offlineInteractions.delete(uid)) scopes.push('offline_access');
  if (scopes.length) grant.addOIDCScope(scopes.join(' '));
  for (const resource of [params.resource ?? []].flat()) {
    const known = new Set(RESOURCES[resource]?.scope?.split(' '));
    const granted = scopes.filter((s) => known.has(s));
    if (granted.length) grant.addResourceScope(resource, granted.join(' '));
  }
  return grant.save();
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction cookie does not match the URL');
  const html = (status, body) => {
    res.writeHead(status, {
      'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store',
    });
    res.end(body);
  };

  if (action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  if (action === 'login') {
    const form = new URLSearchParams((await readBody(req)).toString());
    const username = form.get('username') ?? '';
    const user = users.get(username);
    if (!user || user.password !== form.get('password')) {
      return html(200, loginPage(uid, { username, error: 'Invalid username or password' }));
    }
    const grantId = await grantFor(details, username);
    return provider.interactionFinished(req, res, {
      login: { accountId: username }, consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }
  // Already signed in, only consent missing (e.g. new scopes): granted without a page.
  if (details.prompt.name === 'consent' && details.session?.accountId) {
    const grantId = await grantFor(details, details.session.accountId);
    return provider.interactionFinished(req, res, { consent: { grantId } });
  }
  return html(200, loginPage(uid));
}

// ---- test routes -----------------------------------------------------------------------------

const send = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function readJson(req) {
  const text = (await readBody(req)).toString();
  return text ? JSON.parse(text) : {};
}

// OIDC Back-Channel Logout 1.0 §2.4, signed with the provider's current RS256 key.
async function logoutToken(issuer, { sub, sid, aud }) {
  if (!aud || (!sub && !sid)) throw new Error('aud and one of sub, sid are required');
  const jwk = keys.find((k) => k.alg === 'RS256');
  const claims = { events: { 'http://schemas.openid.net/event/backchannel-logout': {} } };
  if (sub) claims.sub = sub;
  if (sid) claims.sid = sid;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'logout+jwt' })
    .setIssuer(issuer)
    .setAudience(aud)
    .setIssuedAt()
    .setExpirationTime('2m')
    .setJti(randomUUID())
    .sign(await importJWK(jwk, 'RS256'));
}

// POST /test/backchannel: the library's own Client#backchannelLogout (the logout token it would
// send at RP-initiated logout), once per provider session of `sub` that signed in to gatepass.
async function backchannelLogout({ sub, end_session: endSession = false }) {
  if (!sub) throw new Error('sub is required');
  const client = await provider.Client.find(SIGNIN_CLIENT);
  if (!client.backchannelLogoutUri) throw new Error('gatepass has no backchannel_logout_uri');
  const statuses = [];
  let sent = 0;
  for (const id of [...sessionIds]) {
    const session = await provider.Session.find(id);
    if (!session) {
      sessionIds.delete(id);
    } else if (session.accountId === sub && session.authorizations?.[SIGNIN_CLIENT]) {
      sent += 1;
      const sid = session.sidFor(SIGNIN_CLIENT);
      // A non-2xx answer was recorded by testFetch; only failures without one are added here.
      await deliveries.run(statuses, () => client.backchannelLogout(sub, sid))
        .catch((err) => err.response
          || statuses.push(`error: ${err.cause?.message ?? err.message}`));
      if (endSession) await session.destroy();
    }
  }
  return { sent, statuses };
}

const clientConfig = () => ({ ...signin });

// POST /test/client: the new registration must make a valid client, else nothing changes.
async function updateClient(body) {
  const previous = signin;
  signin = {
    redirect_uris: 'redirect_uris' in body
      ? absoluteUris('redirect_uris', body.redirect_uris) : signin.redirect_uris,
    post_logout_redirect_uris: 'post_logout_redirect_uris' in body
      ? absoluteUris('post_logout_redirect_uris', body.post_logout_redirect_uris)
      : signin.post_logout_redirect_uris,
    backchannel_logout_uri: 'backchannel_logout_uri' in body
      ? absoluteUris('backchannel_logout_uri', body.backchannel_logout_uri)[0] ?? null
      : signin.backchannel_logout_uri,
  };
  try {
    rebuild();
    await provider.Client.find(SIGNIN_CLIENT); // validates the metadata
  } catch (err) {
    signin = previous;
    rebuild();
    throw err;
  }
  return clientConfig();
}

const REFRESH_FAILURES = {
  invalid_grant: [400, {
    error: 'invalid_grant',
    error_description: 'refresh token rejected (POST /test/refresh-fail)',
  }],
  unavailable: [503, {
    error: 'temporarily_unavailable',
    error_description: 'token endpoint unavailable (POST /test/refresh-fail)',
  }],
};

// Answers a refresh_token grant itself while POST /test/refresh-fail is on. The body is read
// here, so the provider gets it as `req.body` (which it accepts, warning once) for other grants.
async function refreshFailure(req, res) {
  const body = await readBody(req);
  if (new URLSearchParams(body.toString()).get('grant_type') === 'refresh_token') {
    const [status, error] = REFRESH_FAILURES[refreshFail];
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(error));
    return true;
  }
  req.body = body;
  return false;
}

const keyList = () => keys.map(({ kid, alg }) => ({ kid, alg }));
function keysChanged() {
  saveKeys();
  rebuild();
  return keyList();
}

const TEST_ROUTES = {
  'POST /test/rotate': async () => {
    keys = [newKey('RS256'), ...keys];
    return keysChanged();
  },
  'POST /test/retire': async () => {
    const seen = new Set();
    keys = keys.filter((k) => !seen.has(k.alg) && seen.add(k.alg));
    return keysChanged();
  },
  'GET /test/kids': async () => keyList(),
  'POST /test/logout-token': async (req) => ({
    logout_token: await logoutToken(issuer, await readJson(req)),
  }),
  'GET /test/client': async () => clientConfig(),
  'POST /test/client': async (req) => updateClient(await readJson(req)),
  'POST /test/ttl': async (req) => {
    accessTokenTtl = seconds('access_token', (await readJson(req)).access_token);
    rebuild();
    return { access_token: accessTokenTtl };
  },
  'GET /test/grants': async () => grantCounts,
  'GET /test/end-sessions': async () => endSessions,
  'POST /test/refresh-fail': async (req) => {
    const { mode } = await readJson(req);
    if (mode !== 'off' && !(mode in REFRESH_FAILURES)) {
      throw new Error('mode must be invalid_grant, unavailable or off');
    }
    refreshFail = mode;
    return { mode };
  },
  'POST /test/next-id-token': async (req) => {
    const { aud } = await readJson(req);
    nextIdTokenAud = aud ?? undefined;
    return { aud: nextIdTokenAud ?? null };
  },
  'POST /test/backchannel': async (req) => backchannelLogout(await readJson(req)),
};

const INTERACTION = /^\/interaction\/([\w-]+)(?:\/(login|abort))?$/;

// ---- server ----------------------------------------------------------------------------------

let issuer;
let provider;
let handle;
const rebuild = () => {
  provider = buildProvider(issuer);
  handle = provider.callback();
};

const server = http.createServer(async (req, res) => {
  try {
    const path = req.url.split('?')[0];
    const testRoute = TEST_ROUTES[`${req.method} ${path}`];
    if (testRoute) return send(res, 200, await testRoute(req));
    const [, uid, action] = path.match(INTERACTION) ?? [];
    if (uid && req.method === (action ? 'POST' : 'GET')) {
      return await interaction(req, res, uid, action);
    }
    if (refreshFail !== 'off' && req.method === 'POST' && path === '/token') {
      if (await refreshFailure(req, res)) return undefined;
    }
    return handle(req, res);
  } catch (err) {
    const description = err?.error_description && { error_description: err.error_description };
    return send(res, 400, { error: String(err?.message ?? err), ...description });
  }
});

server.listen(port, '127.0.0.1', async () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  rebuild();
  try {
    await provider.Client.find(SIGNIN_CLIENT); // fails now, not at the first request
  } catch (err) {
    console.error(`client ${SIGNIN_CLIENT} is invalid: ${err.message} (${err.error_description})`);
    process.exit(1);
  }
  console.log(`oidc-provider listening on ${issuer}`);
});

process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
