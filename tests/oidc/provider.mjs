// A real OpenID Provider (panva's oidc-provider) for the Rust tests: `node tests/oidc/provider.mjs`.
//
// Environment (all optional):
//   PORT                 port on 127.0.0.1 (default 0: any free port); the issuer is
//                        http://127.0.0.1:<port>, no trailing slash
//   OIDC_KEYS            JSON file of the private signing JWKs: loaded when present, else
//                        generated (RS256, ES256, EdDSA) and written, so a restart serves the
//                        same keys and tokens minted before it still verify
//   GATEPASS_SECRET      secret of client `gatepass` (introspection)
//   MCP_CLIENT_SECRET    secret of client `mcp-client` (client_credentials, revocation;
//                        may ask for `mcp:read mcp:write`)
//   MCP_VIEWER_SECRET    secret of client `mcp-viewer` (client_credentials, `mcp:read` only)
//   EXTRA_RESOURCES      more RFC 8707 resource indicators, space-separated absolute URIs (e.g.
//                        the e2e stack's `http://127.0.0.1:<port>/mcp`): each gets RS256
//                        `at+jwt` access tokens with `aud` = the URI, like the fixed ones below
//
// Prints `oidc-provider listening on http://127.0.0.1:<port>` once it serves. Besides the
// provider's own routes, the same port answers a few test-only routes (handled before the
// provider, because oidc-provider fixes its keystore at construction: a key change builds a
// new Provider on the same in-memory storage, so opaque tokens survive it):
//   POST /test/rotate        adds a new RS256 key as the first key (it signs from then on)
//   POST /test/retire        keeps only the newest key of each alg
//   GET  /test/kids          [{kid, alg}] in keystore order
//   POST /test/logout-token  {sub?, sid?, aud} -> {logout_token}: a Back-Channel Logout token
// SIGTERM closes the server and exits 0.

import { generateKeyPairSync, randomUUID } from 'node:crypto';
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
const extraResources = (process.env.EXTRA_RESOURCES ?? '').split(/\s+/).filter(Boolean);
for (const r of extraResources) {
  const u = new URL(r); // throws on anything but an absolute URI
  if (u.hash) throw new Error(`EXTRA_RESOURCES: ${r} has a fragment (RFC 8707 forbids it)`);
}

// ---- keys ------------------------------------------------------------------------------------

function newKey(alg) {
  const [type, opts] = {
    RS256: ['rsa', { modulusLength: 2048 }],
    ES256: ['ec', { namedCurve: 'P-256' }],
    EdDSA: ['ed25519', {}],
  }[alg];
  const { privateKey } = generateKeyPairSync(type, opts);
  const kid = `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}`;
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

let keys = keysFile && existsSync(keysFile)
  ? JSON.parse(readFileSync(keysFile, 'utf8'))
  : ['RS256', 'ES256', 'EdDSA'].map(newKey);

function saveKeys() {
  if (keysFile) writeFileSync(keysFile, JSON.stringify(keys), { mode: 0o600 });
}
saveKeys();

// ---- provider --------------------------------------------------------------------------------

// RFC 8707 resource indicators -> the access token each one gets (RFC 9068 `at+jwt` or opaque).
const jwtResource = (alg) => ({ scope: SCOPES, accessTokenFormat: 'jwt', jwt: { sign: { alg } } });
const RESOURCES = {
  'https://api.test/rs256': jwtResource('RS256'),
  'https://api.test/es256': jwtResource('ES256'),
  'https://api.test/eddsa': jwtResource('EdDSA'),
  'https://api.test/opaque': { scope: SCOPES, accessTokenFormat: 'opaque' },
  'https://mcp.example.test/mcp': jwtResource('RS256'),
  ...Object.fromEntries(extraResources.map((r) => [r, jwtResource('RS256')])),
};

function buildProvider(issuer) {
  return new Provider(issuer, {
    jwks: { keys },
    adapter: (model) => new MemoryAdapter(model),
    clients: [
      {
        // The resource server (gatepass): it only authenticates to introspect.
        client_id: 'gatepass',
        client_secret: gatepassSecret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: [],
        response_types: [],
        redirect_uris: [],
      },
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
    scopes: ['openid', 'offline_access', ...SCOPES.split(' ')],
    // Not used (no end-user flows), given so the provider prints no "should change" notices.
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    cookies: { keys: ['gatepass-oidc-test-cookie-key'] },
    ttl: { ClientCredentials: 600 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      backchannelLogout: { enabled: true },
      // Any authenticated client may introspect (gatepass does it for tokens of mcp-client).
      introspection: { enabled: true, allowedPolicy: async () => true },
      // RFC 7009: the owning client revokes its own tokens (the library's default policy).
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        getResourceServerInfo: async (_ctx, resource) => {
          const info = RESOURCES[resource];
          if (!info) throw new errors.InvalidTarget(`unknown resource ${resource}`);
          return { audience: resource, ...info };
        },
      },
    },
  });
}

// ---- test routes -----------------------------------------------------------------------------

const send = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

async function readJson(req) {
  let text = '';
  for await (const chunk of req) text += chunk;
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
    const route = `${req.method} ${req.url.split('?')[0]}`;
    if (route === 'POST /test/rotate') {
      keys = [newKey('RS256'), ...keys];
    } else if (route === 'POST /test/retire') {
      const seen = new Set();
      keys = keys.filter((k) => !seen.has(k.alg) && seen.add(k.alg));
    } else if (route === 'POST /test/logout-token') {
      return send(res, 200, { logout_token: await logoutToken(issuer, await readJson(req)) });
    } else if (route !== 'GET /test/kids') {
      return handle(req, res);
    }
    if (req.method === 'POST') {
      saveKeys();
      rebuild();
    }
    return send(res, 200, keys.map(({ kid, alg }) => ({ kid, alg })));
  } catch (err) {
    return send(res, 400, { error: String(err?.message ?? err) });
  }
});

server.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  rebuild();
  console.log(`oidc-provider listening on ${issuer}`);
});

process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
