// The OIDC identity provider the integration tests run (driven by tests/support/idp.rs).
//
//   node tests/idp/idp.mjs --config idp.json
//
// idp.json: {"port": 0, "issuer"?: "...", "tls": {"cert": PEM, "key": PEM},
//            "keys": [PEM path | {"path": PEM path, "kid": "..."}],
//            "resource": "https://models.test" | ["https://models.test", "https://other.test"],
//            "clients": [{"client_id", "client_secret", "alg": "RS256"|"ES256",
//                         "groups": [...], "scope": "a b", "ttl": 300}]}
//
// It issues JWT access tokens (typ at+jwt) for the client_credentials grant, audience `resource`
// (the first one when a request names none; further ones let tests mint wrong-audience tokens), signed with the client's `alg`, with the client's `groups` as a claim. Prints `ready ISSUER` on
// stdout once it listens, and `hit PATH` on stderr for every request so that tests can count
// how often the gateway asks it for anything (JWKS fetches above all).
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { parseArgs } from 'node:util';

import { calculateJwkThumbprint } from 'jose';
import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({ options: { config: { type: 'string' } } });
if (!args.config) {
  console.error('usage: node idp.mjs --config idp.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(args.config, 'utf8'));
const clients = new Map(config.clients.map((c) => [c.client_id, c]));
const resources = [config.resource].flat();

// PKCS#8 PEM private keys → private JWKs. The kid defaults to the RFC 7638 thumbprint, so the
// same key file always has the same kid and a new key file a new one (key-rotation tests).
async function loadKey(entry) {
  const { path, kid } = typeof entry === 'string' ? { path: entry } : entry;
  const jwk = createPrivateKey(readFileSync(path)).export({ format: 'jwk' });
  return { ...jwk, use: 'sig', kid: kid ?? (await calculateJwkThumbprint(jwk)) };
}
const keys = await Promise.all(config.keys.map(loadKey));

// Bind first: with port 0 the issuer can only be known once the kernel has chosen the port.
const server = https.createServer({
  cert: readFileSync(config.tls.cert),
  key: readFileSync(config.tls.key),
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port ?? 0, '127.0.0.1', resolve);
});
const issuer = config.issuer ?? `https://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys },
  // Client `scope` metadata may only name scopes the server knows: all the clients' scopes.
  scopes: [...new Set(config.clients.flatMap((c) => c.scope?.split(' ') ?? []))],
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    // The client's allow-list; a token carries the requested part of it (see Idp::token).
    ...(c.scope ? { scope: c.scope } : {}),
  })),
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false }, // no login pages: machine clients only
    resourceIndicators: {
      enabled: true,
      // A token request without `resource` gets a token for the first (the gateway's) audience.
      defaultResource: () => resources[0],
      getResourceServerInfo: (ctx, resource, client) => {
        if (!resources.includes(resource)) throw new errors.InvalidTarget();
        const c = clients.get(client.clientId);
        return {
          audience: resource,
          scope: c.scope ?? '',
          accessTokenFormat: 'jwt',
          accessTokenTTL: c.ttl ?? 300,
          jwt: { sign: { alg: c.alg ?? 'RS256' } },
        };
      },
    },
  },
  // Claims a real IdP adds from its directory: here, the client's configured groups.
  extraTokenClaims: (ctx, token) => {
    const groups = clients.get(token.clientId)?.groups;
    return groups ? { groups } : undefined;
  },
  ttl: { ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 300 },
});

const app = provider.callback();
server.on('request', (req, res) => {
  console.error(`hit ${req.url.split('?')[0]}`);
  app(req, res);
});
// Tests read stdout line by line: exactly one line, then nothing.
process.stdout.write(`ready ${issuer}\n`);

// Tests stop it with SIGTERM/SIGKILL; exit promptly and release the port for a restart.
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
