// A demo MCP server behind gatepass (SPEC §8), on the official MCP TypeScript SDK v2
// (`@modelcontextprotocol/server`): streamable HTTP at /mcp, protocol revision 2026-07-28
// (stateless: no `initialize`, no session, a new server per request, JSON responses),
// GET /health, and two tools:
//   whoami    (read)  the caller as gatepass identified it: X-User-Id, -Username, -Role,
//                     -Permissions and -Expires, checked against X-User-Assertion
//   set_note  (write) keeps a note per caller; needs `mcp:write` in X-User-Permissions
//
// It trusts no identity header by itself: every /mcp request must carry gatepass's
// X-User-Assertion, verified with jose against gatepass's JWKS (GATEPASS_JWKS_URL: signature,
// `exp`, `aud` = the Host gatepass saw) and equal to the X-User-* headers, else 401 (e.g. a
// request that reached the server without passing Traefik and gatepass).
//
// Where the write check lives: gatepass decides from the method, path and headers Traefik
// forwards, never from the body, and every MCP tool call is the same `POST /mcp` with the tool
// name inside the JSON-RPC body. So gatepass enforces what is per-route (a token for this
// resource, `mcp:read` for /mcp) and this server enforces what is per-tool: `tools/call` of
// `set_note` without `mcp:write` is answered 403 with the RFC 6750 / MCP authorization
// `insufficient_scope` challenge. (Putting write tools on a separate path with a gatepass rule
// would make them a separate MCP endpoint that a client connected to /mcp never lists.)
//
// Protocol revisions: a 2026-07-28 request (its `params._meta` names the revision; the SDK's
// `isLegacyRequest` decides) goes to the SDK's `createMcpHandler`, which requires the SEP-2243
// headers `MCP-Protocol-Version`, `Mcp-Method` and, for `tools/call`, `Mcp-Name`, agreeing with
// the body, and answers a missing or disagreeing one 400 with JSON-RPC error -32020
// (HeaderMismatch). A request without that claim is 2025-era traffic (`initialize`, or a
// hand-made JSON-RPC post), still served statelessly with JSON answers as with the v1 SDK.
// GET and DELETE /mcp are 405 (no session, no server-initiated stream).
//
// Environment:
//   PORT                port (default 0: any free port)
//   HOST                address (default 127.0.0.1; 0.0.0.0 in a container)
//   GATEPASS_JWKS_URL   gatepass's /.well-known/jwks.json (required; through Traefik is fine)
//   ASSERTION_AUDIENCE  the expected assertion `aud` (default: the request's Host; pin it in
//                       production, as mcp-status's `assertion_audience`)
//   MCP_PATH            the path clients use (default /mcp), for the challenge's metadata URL
//
// Prints `mcp demo server listening on http://HOST:PORT` once it serves; SIGTERM exits 0.

import http from 'node:http';
import { Readable } from 'node:stream';

import { createRemoteJWKSet, errors as joseErrors, jwtVerify } from 'jose';
import {
  createMcpHandler,
  isLegacyRequest,
  McpServer,
  WebStandardStreamableHTTPServerTransport,
} from '@modelcontextprotocol/server';
import { z } from 'zod';

const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST ?? '127.0.0.1';
const jwksUrl = process.env.GATEPASS_JWKS_URL;
const pinnedAudience = process.env.ASSERTION_AUDIENCE || undefined;
const mcpPath = process.env.MCP_PATH ?? '/mcp';
const WRITE = 'mcp:write';
const MAX_BODY = 1 << 20;

if (!jwksUrl) {
  console.error('GATEPASS_JWKS_URL is required (gatepass\'s /.well-known/jwks.json)');
  process.exit(2);
}
const jwks = createRemoteJWKSet(new URL(jwksUrl), { timeoutDuration: 2000, cooldownDuration: 1000 });

/** The caller's notes (process memory; a demo). */
const notes = new Map();

// ---- identity --------------------------------------------------------------------------------

class Refusal extends Error {
  constructor(status, error, description, challenge) {
    super(description);
    this.status = status;
    this.error = error;
    this.challenge = challenge;
  }
}

/** gatepass percent-encodes header values (`%XX`); lists are comma-separated. */
const decode = (v) => decodeURIComponent(v);
const decodeList = (v) => (v === '' ? [] : v.split(',').map(decode));

/** The identity of an /mcp request, or a Refusal (401, or 503 while the keys can't be had). */
async function identityOf(req) {
  const h = (name) => {
    const v = req.headers[name];
    if (Array.isArray(v)) throw unauthenticated(`several ${name} headers`);
    return v;
  };
  const assertion = h('x-user-assertion');
  if (!assertion) throw unauthenticated('identity assertion missing');
  const audience = pinnedAudience ?? req.headers.host ?? '';
  let claims;
  try {
    ({ payload: claims } = await jwtVerify(assertion, jwks, { algorithms: ['EdDSA'], audience }));
  } catch (err) {
    // The JWKS could not be fetched (network, timeout, not 200 or not JSON): not the caller's fault.
    if (err instanceof joseErrors.JWKSTimeout || err instanceof TypeError || err?.code === 'ERR_JOSE_GENERIC') {
      throw new Refusal(503, 'temporarily_unavailable', 'gatepass keys are not available');
    }
    throw unauthenticated(`identity assertion invalid (${err?.code ?? 'error'})`);
  }
  let identity;
  try {
    identity = {
      id: decode(h('x-user-id') ?? ''),
      username: decode(h('x-user-username') ?? ''),
      role: decode(h('x-user-role') ?? ''),
      permissions: decodeList(h('x-user-permissions') ?? ''),
      expires: h('x-user-expires') ? Number(h('x-user-expires')) : null,
    };
  } catch {
    throw unauthenticated('identity headers are not encoded as gatepass encodes them');
  }
  const same =
    claims.sub === identity.id &&
    claims.username === identity.username &&
    claims.role === identity.role &&
    JSON.stringify(claims.permissions ?? []) === JSON.stringify(identity.permissions) &&
    (claims.token_exp ?? null) === identity.expires;
  if (!identity.id || !same) throw unauthenticated('identity headers do not match the assertion');
  return identity;
}

function unauthenticated(description) {
  return new Refusal(401, 'unauthorized', description, `Bearer error="invalid_token", error_description="${description}"`);
}

/** The RFC 9728 metadata URL of this resource as the client reached it (through Traefik). */
function metadataUrl(req) {
  const proto = req.headers['x-forwarded-proto'] === 'https' ? 'https' : 'http';
  const fwdHost = req.headers['x-forwarded-host'] ?? req.headers.host ?? '';
  if (!/^[A-Za-z0-9.\-:[\]]+$/.test(fwdHost)) return null;
  return `${proto}://${fwdHost}/.well-known/oauth-protected-resource${mcpPath}`;
}

/** `tools/call` of a write tool in a JSON-RPC message or batch. */
const callsWriteTool = (body) =>
  (Array.isArray(body) ? body : [body]).some(
    (m) => m && m.method === 'tools/call' && WRITE_TOOLS.has(m.params?.name),
  );
const WRITE_TOOLS = new Set(['set_note']);

// ---- the MCP server --------------------------------------------------------------------------

const text = (value) => ({ content: [{ type: 'text', text: typeof value === 'string' ? value : JSON.stringify(value) }] });

function mcpServer(identity) {
  const server = new McpServer({ name: 'gatepass-demo-mcp', version: '0.1.0' });
  server.registerTool(
    'whoami',
    {
      title: 'Who am I',
      description: 'The caller as gatepass identified it (X-User-* headers, checked against X-User-Assertion).',
      annotations: { readOnlyHint: true },
    },
    async () => text(identity),
  );
  server.registerTool(
    'set_note',
    {
      title: 'Set note',
      description: `Keeps one note for the caller (needs ${WRITE}).`,
      inputSchema: z.object({ text: z.string().max(1000) }),
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true },
    },
    async ({ text: note }) => {
      // The HTTP layer answered 403 already; this is the same rule, kept next to the tool.
      if (!identity.permissions.includes(WRITE)) {
        return { ...text(`set_note needs ${WRITE}`), isError: true };
      }
      notes.set(identity.id, note);
      return text({ saved: true, id: identity.id, note });
    },
  );
  return server;
}

/**
 * 2026-07-28 requests: the SDK's per-request entry. It checks the SEP-2243 headers against the
 * body (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) and serves the message on a fresh
 * `mcpServer`; the caller's identity comes through `authInfo`, which the entry hands to the
 * factory as is. `legacy: 'reject'`: 2025-era requests never reach it (see `handleMcp`).
 */
const modern = createMcpHandler(({ authInfo }) => mcpServer(authInfo.extra.identity), {
  legacy: 'reject',
  maxRequestBodySize: MAX_BODY,
  onerror: (err) => console.error(`mcp: ${err?.message ?? err}`),
});

/**
 * 2025-era requests (no `_meta` protocol-version claim: `initialize`, hand-made JSON-RPC): served
 * statelessly as before, a new server and transport per request with JSON responses. (The
 * entry's own `legacy: 'stateless'` fallback would answer them as SSE streams.)
 */
async function serveLegacy(request, authInfo, body) {
  const server = mcpServer(authInfo.extra.identity);
  const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  await server.connect(transport);
  const close = () => {
    transport.close().catch(() => {});
    server.close().catch(() => {});
  };
  try {
    return { response: await transport.handleRequest(request, { authInfo, parsedBody: body }), close };
  } catch (err) {
    close();
    throw err;
  }
}

// ---- HTTP ------------------------------------------------------------------------------------

function sendJson(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Refusal(413, 'invalid_request', 'request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function handleMcp(req, res) {
  const identity = await identityOf(req);
  if (req.method !== 'POST') {
    // Stateless: no server-initiated stream (GET) and no session to end (DELETE).
    return sendJson(res, 405, { jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed.' }, id: null }, { allow: 'POST' });
  }
  const raw = await readBody(req);
  let body;
  try {
    body = JSON.parse(raw);
  } catch {
    return sendJson(res, 400, { jsonrpc: '2.0', error: { code: -32700, message: 'Parse error' }, id: null });
  }
  if (callsWriteTool(body) && !identity.permissions.includes(WRITE)) {
    const description = `set_note needs the ${WRITE} permission`;
    const meta = metadataUrl(req);
    const challenge =
      `Bearer error="insufficient_scope", scope="${WRITE}"` +
      (meta ? `, resource_metadata="${meta}"` : '') +
      `, error_description="${description}"`;
    return sendJson(res, 403, { error: 'insufficient_scope', error_description: description }, { 'www-authenticate': challenge });
  }
  // The Node request as a web Request (the body already read), for the SDK.
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (!HOP_BY_HOP.has(req.rawHeaders[i].toLowerCase())) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
  }
  const request = new Request(new URL(req.url ?? '/', 'http://127.0.0.1'), {
    method: req.method,
    headers,
    body: raw,
    signal: abort.signal,
  });
  const authInfo = {
    token: req.headers['x-user-assertion'],
    clientId: identity.id,
    scopes: identity.permissions,
    ...(identity.expires !== null && { expiresAt: identity.expires }),
    extra: { identity },
  };
  // The SDK's own era classifier, from the body: a `_meta` protocol-version claim is 2026-07-28.
  if (await isLegacyRequest(request, body)) {
    const { response, close } = await serveLegacy(request, authInfo, body);
    res.on('close', close);
    return sendResponse(res, response);
  }
  return sendResponse(res, await modern.fetch(request, { authInfo, parsedBody: body }));
}

/** Not passed on to the SDK: they describe the Node connection and body, not the request. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length']);

/** Writes a web Response (JSON, or an SSE stream when a tool streams) to the Node response. */
function sendResponse(res, response) {
  const headers = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  res.writeHead(response.status, headers);
  if (!response.body) return res.end();
  const body = Readable.fromWeb(response.body);
  res.on('close', () => body.destroy());
  body.pipe(res);
}

const httpServer = http.createServer(async (req, res) => {
  const path = (req.url ?? '/').split('?')[0];
  if (path !== '/health') res.on('finish', () => console.log(`${req.method} ${path} ${res.statusCode}`));
  try {
    if (path === '/health') {
      if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: 'method_not_allowed' }, { allow: 'GET, HEAD' });
      return sendJson(res, 200, { status: 'ok' });
    }
    if (path === mcpPath || path === `${mcpPath}/`) return await handleMcp(req, res);
    return sendJson(res, 404, { error: 'not_found' });
  } catch (err) {
    if (res.headersSent) return res.end();
    if (err instanceof Refusal) {
      const headers = err.challenge ? { 'www-authenticate': err.challenge } : {};
      return sendJson(res, err.status, { error: err.error, error_description: err.message }, headers);
    }
    console.error(`${req.method} ${path}: ${err?.stack ?? err}`);
    return sendJson(res, 500, { error: 'server_error' });
  }
});

httpServer.listen(port, host, () => {
  console.log(`mcp demo server listening on http://${host}:${httpServer.address().port}`);
});

process.on('SIGTERM', () => {
  httpServer.close(() => process.exit(0));
  httpServer.closeAllConnections();
});
