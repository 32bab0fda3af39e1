// An MCP client on the official MCP TypeScript SDK v2 (`@modelcontextprotocol/client`) that
// knows only the server URL and its client credentials (SPEC §8): `node tests/mcp/client.mjs`.
//
// It speaks protocol revision 2026-07-28 only (`versionNegotiation: { pin }`): no `initialize`
// and no session; `connect()` is one `server/discover` request, and every request carries its
// `_meta` envelope and the SEP-2243 headers `MCP-Protocol-Version`, `Mcp-Method` and (for
// `tools/call`) `Mcp-Name`, which the transport derives from the body.
//
// The SDK's StreamableHTTPClientTransport with its ClientCredentialsProvider does the MCP
// authorization flow by itself: the first POST gets 401 with `WWW-Authenticate: Bearer ...,
// resource_metadata="..."`; it fetches that RFC 9728 document, takes the first of its
// `authorization_servers`, reads that server's metadata (RFC 8414, else OpenID discovery),
// asks its token endpoint for a client_credentials token with `resource` = the document's
// `resource` (RFC 8707; client_secret_basic), and retries with the token. Without SCOPE the
// token request asks for the challenge's `scope`, else the scopes the resource metadata lists
// (`scopes_supported`), as the MCP spec's scope selection says (the v2 SDK does this itself).
// A 403 `insufficient_scope` makes it ask for a token once more (step-up), then it gives up.
// The one addition here: SCOPE, when set, is what every token request asks for, the step-up
// one included.
//
// Environment:
//   MCP_URL        the MCP server, e.g. http://127.0.0.1:8080/mcp (required)
//   CLIENT_ID      client_credentials client id (required)
//   CLIENT_SECRET  its secret (required)
//   SCOPE          the scope to ask for (default: the metadata's scopes_supported)
//   CALL           the tool to call after listing them (default whoami; "" = none)
//   ARGUMENTS      its arguments, JSON (default {})
//
// Prints one JSON object a line: {"http": {method, url, status, www_authenticate}} for every
// HTTP exchange (MCP and OAuth), {"discovery": {...}} once the authorization server is known,
// {"tools": [names]}, {"call": name, "result": CallToolResult}; on failure
// {"error": {name, code, message}} and exit 1.

import { Client, ClientCredentialsProvider, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

/** The protocol revision this client speaks (SEP-2243 headers, per-request `_meta`). */
const PROTOCOL_VERSION = '2026-07-28';

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return v;
};
const url = new URL(env('MCP_URL'));
const clientId = env('CLIENT_ID');
const clientSecret = env('CLIENT_SECRET');
const configuredScope = process.env.SCOPE || undefined;
const call = process.env.CALL ?? 'whoami';
const args = JSON.parse(process.env.ARGUMENTS || '{}');

const emit = (obj) => console.log(JSON.stringify(obj));

/** The SDK's client_credentials provider, reporting discovery; SCOPE, when set, always wins. */
class ClientCredentials extends ClientCredentialsProvider {
  saveDiscoveryState(state) {
    emit({
      discovery: {
        authorization_server: state.authorizationServerUrl,
        resource: state.resourceMetadata?.resource ?? null,
        scopes_supported: state.resourceMetadata?.scopes_supported ?? null,
        token_endpoint: state.authorizationServerMetadata?.token_endpoint ?? null,
      },
    });
  }

  prepareTokenRequest(scope) {
    return super.prepareTokenRequest(configuredScope ?? scope);
  }
}

/** fetch, recording every exchange (the secret and tokens are never printed). */
async function loggingFetch(input, init) {
  const res = await fetch(input, init);
  const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
  emit({
    http: {
      method,
      url: String(input instanceof Request ? input.url : input),
      status: res.status,
      www_authenticate: res.headers.get('www-authenticate'),
    },
  });
  return res;
}

const transport = new StreamableHTTPClientTransport(url, {
  authProvider: new ClientCredentials({ clientId, clientSecret, clientName: 'gatepass-e2e-mcp-client' }),
  fetch: loggingFetch,
});
const client = new Client(
  { name: 'gatepass-e2e-mcp-client', version: '0.1.0' },
  { versionNegotiation: { mode: { pin: PROTOCOL_VERSION } } },
);

try {
  await client.connect(transport);
  const { tools } = await client.listTools();
  emit({ tools: tools.map((t) => t.name) });
  if (call) {
    const result = await client.callTool({ name: call, arguments: args });
    emit({ call, result });
    if (result.isError) process.exitCode = 1;
  }
} catch (err) {
  emit({ error: { name: err?.constructor?.name ?? 'Error', code: err?.code ?? null, message: String(err?.message ?? err) } });
  process.exitCode = 1;
} finally {
  await client.close().catch(() => {});
}
