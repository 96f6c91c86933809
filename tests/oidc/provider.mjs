// Mock OpenID provider for actix-tenancy integration tests.
//
// Built on oauth2-mock-server (pinned in package.json). Run from the repo root:
//
//     (cd tests/oidc && npm ci --no-audit --no-fund)
//     PORT=0 node tests/oidc/provider.mjs
//
// When ready it prints exactly ONE line to stdout and nothing else, ever:
//
//     {"issuer":"http://127.0.0.1:PORT"}
//
// Everything else goes to stderr. SIGTERM / SIGINT: closes and exits with 0.
//
// Environment
//   PORT                 port to listen on, on 127.0.0.1 only (default 0 = random free port)
//   KID_PREFIX           key ids are KID_PREFIX + counter: k1, k2, ... (default "k";
//                        printable ASCII without space, at most 40 chars)
//   EXIT_ON_STDIN_CLOSE  "1": also exit (0) when stdin reaches EOF, so a test that
//                        spawns the provider with a piped stdin cannot leak it
//   VERBOSE              "1": log every request to stderr
//
// The issuer URL is exactly "http://127.0.0.1:PORT" (no trailing slash), and it
// is the discovery document's `issuer` and every token's `iss`.
//
// Endpoints of the mock server (served by the library, counted and delayed here)
//   GET  /.well-known/openid-configuration  discovery; jwks_uri = ISSUER + "/jwks",
//                                           token_endpoint = ISSUER + "/token"
//   GET  /jwks                              {"keys":[public RSA JWKs {kty,n,e,kid,alg:"RS256"}]}
//                                           oldest first; Cache-Control only if set (below)
//   POST /token                             form-encoded (or JSON) body, no client
//                                           authentication at all (client_id / Basic are
//                                           accepted and ignored). Answers 200
//                                           {"access_token":JWT,"token_type":"Bearer",
//                                            "expires_in":N[,"scope":S]}
//                                           with Cache-Control: no-store.
//   The library's other endpoints (/authorize, /userinfo, /revoke, /endsession,
//   /introspect) are served unchanged and are not counted.
//
// Token request form fields (grant_type=client_credentials; other grants keep the
// library's own claims, but are still signed with the current key)
//   grant_type     required; "client_credentials"
//   sub            `sub` claim (default "user-1")
//   aud            `aud` claim (default "api"); repeat the field (aud=a&aud=b) for an array
//   tenant         tenant value; omitted from the token if not given
//   tenant_claim   name of the claim that carries `tenant` (default "tenant_id")
//   scope          `scope` claim, a space separated string (set by the library); also
//                  echoed in the response's "scope"
//   extra          a JSON object, shallow-merged into the payload LAST, so it can add
//                  nested claims ({"https://example.com/claims":{"tenant":"acme"}}),
//                  arrays ({"scp":["read","write"]}) or override any claim
//                  ({"iss":"http://evil"}); a null value removes that claim ({"nbf":null})
//   expires_in     integer seconds, may be 0 or negative: exp = iat + expires_in
//                  (default 600); the response's "expires_in" is the same number
//   no_jti         "1": no `jti` claim (otherwise a fresh random UUID per token)
//   A malformed field gets 400 {"error":"invalid_request","error_description":...}.
//
// Every client_credentials token: header {"alg":"RS256","kid":CURRENT_KID,"typ":"JWT"};
// payload iss, iat (now), exp, nbf (= iat - 10, added by the library), sub, aud,
// jti, [scope], [tenant claim], [extra...].
//
// Test control endpoints (JSON in and out, never counted, never delayed)
//   POST /_test/rotate                 new RS256 key, becomes the signing key; older
//                                      keys stay in the JWKS        -> {"kid":"k2"}
//   POST /_test/withdraw?kid=K         removes K from the JWKS (and from signing); if K
//                                      was signing, the newest remaining key signs
//                                      -> {"kids":["k1",...remaining, oldest first]}
//                                      (404 for an unknown kid; withdrawing the last
//                                      key leaves an empty JWKS and /token answers 503)
//   GET  /_test/keys                   -> {"current":"k2"|null,"kids":["k1","k2"]}
//   GET  /_test/stats                  -> {"jwks":N,"discovery":M,"token":T}: requests
//                                      received by each endpoint (GET/HEAD for jwks and
//                                      discovery, POST for token) since start or reset
//   POST /_test/reset                  zeroes those counters       -> the zeroed stats
//   POST /_test/delay?ms=N             JWKS and discovery wait N ms before answering,
//                                      from now on (0 = off)       -> {"ms":N}
//   POST /_test/cache-control?value=V  the JWKS response carries "Cache-Control: V";
//                                      an empty V removes it (default: no header)
//                                      -> {"cache_control":"V"|null}

import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { OAuth2Issuer, JWKStore, Events } from 'oauth2-mock-server';
// OAuth2Service is not re-exported by the package's index in 7.2.x; the version is
// pinned exactly in package.json, so this path is stable.
import { OAuth2Service } from 'oauth2-mock-server/dist/lib/oauth2-service.js';

const HOST = '127.0.0.1';
const DISCOVERY_PATH = '/.well-known/openid-configuration';
const JWKS_PATH = '/jwks';
const TOKEN_PATH = '/token';
const DEFAULT_TTL = 600;
const MAX_DELAY_MS = 600_000;

const log = (...args) => console.error('[oidc-provider]', ...args);

function fail(message) {
  log(message);
  process.exit(1);
}

// ---------------------------------------------------------------- configuration

const port = (() => {
  const raw = process.env.PORT ?? '0';
  if (!/^\d{1,5}$/.test(raw) || Number(raw) > 65535) fail(`invalid PORT ${JSON.stringify(raw)}`);
  return Number(raw);
})();

const kidPrefix = process.env.KID_PREFIX ?? 'k';
if (!/^[\x21-\x7e]{0,40}$/.test(kidPrefix)) {
  fail('KID_PREFIX must be at most 40 printable ASCII characters without spaces');
}
const verbose = process.env.VERBOSE === '1';

// ---------------------------------------------------------------- issuer & keys

// The library's key store hands out keys round robin and cannot drop a key, so this
// issuer owns a replaceable store and always asks for the current key by kid.
class TestIssuer extends OAuth2Issuer {
  #store = new JWKStore();
  #privateJwks = new Map(); // kid -> private JWK, insertion order = oldest first
  #counter = 0;

  get keys() {
    return this.#store;
  }

  get kids() {
    return [...this.#privateJwks.keys()];
  }

  get currentKid() {
    const kids = this.kids;
    return kids.length === 0 ? null : kids[kids.length - 1];
  }

  buildToken(opts) {
    return super.buildToken({ ...opts, kid: this.currentKid ?? undefined });
  }

  async rotate() {
    this.#counter += 1;
    const kid = `${kidPrefix}${this.#counter}`;
    const jwk = await this.#store.generate('RS256', { kid });
    this.#privateJwks.set(kid, { ...jwk });
    return kid;
  }

  // Returns false for an unknown kid.
  async withdraw(kid) {
    if (!this.#privateJwks.has(kid)) return false;
    this.#privateJwks.delete(kid);
    const store = new JWKStore();
    for (const jwk of this.#privateJwks.values()) await store.add({ ...jwk });
    this.#store = store;
    return true;
  }
}

const issuer = new TestIssuer();
const service = new OAuth2Service(issuer);

// ---------------------------------------------------------------- token claims

class BadRequest extends Error {}

const kTtl = Symbol('ttl');

function optionalString(body, name) {
  const v = body[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new BadRequest(`'${name}' must be given once, as a string`);
  return v;
}

function parseExtra(raw) {
  if (raw === undefined) return {};
  let value = raw;
  if (typeof raw === 'string') {
    try {
      value = JSON.parse(raw);
    } catch (e) {
      throw new BadRequest(`'extra' is not valid JSON: ${e.message}`);
    }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new BadRequest("'extra' must be a JSON object");
  }
  return value;
}

function parseTtl(raw) {
  if (raw === undefined) return DEFAULT_TTL;
  const s = String(raw);
  if (Array.isArray(raw) || !/^-?\d{1,10}$/.test(s)) {
    throw new BadRequest("'expires_in' must be an integer number of seconds");
  }
  return Number(s);
}

service.on(Events.BeforeTokenSigning, (token, req) => {
  const body = req.body ?? {};
  if (body.grant_type !== 'client_credentials') return;

  const sub = optionalString(body, 'sub') ?? 'user-1';
  const tenant = optionalString(body, 'tenant');
  const tenantClaim = optionalString(body, 'tenant_claim') ?? 'tenant_id';
  if (tenantClaim === '') throw new BadRequest("'tenant_claim' must not be empty");
  const noJti = optionalString(body, 'no_jti');
  const ttl = parseTtl(body.expires_in);
  const extra = parseExtra(body.extra);
  // the library has already checked that aud is a string or an array of strings
  const aud = body.aud ?? 'api';

  const p = token.payload;
  const now = typeof p.iat === 'number' ? p.iat : Math.floor(Date.now() / 1000);
  p.iss = issuer.url;
  p.iat = now;
  p.exp = now + ttl;
  p.sub = sub;
  p.aud = aud;
  if (p.scope === undefined) delete p.scope;
  if (noJti === '1' || noJti === 'true') delete p.jti;
  else p.jti = randomUUID();
  if (tenant !== undefined) p[tenantClaim] = tenant;
  for (const [name, value] of Object.entries(extra)) {
    if (value === null) delete p[name];
    else p[name] = value;
  }
  req[kTtl] = ttl;
});

service.on(Events.BeforeResponse, (response, req) => {
  if (req[kTtl] !== undefined && response.body && typeof response.body === 'object') {
    response.body.expires_in = req[kTtl];
  }
});

// JSON errors instead of express's HTML pages (bad body, missing grant_type, ...).
service.requestHandler.use((err, req, res, _next) => {
  const clientError =
    err instanceof BadRequest ||
    err?.name === 'AssertionError' ||
    (Number.isInteger(err?.status) && err.status >= 400 && err.status < 500);
  if (!clientError) log('error while serving', req.method, req.url, err);
  if (res.headersSent) return res.end();
  const status = clientError ? (err instanceof BadRequest || !err.status ? 400 : err.status) : 500;
  res.status(status).json({
    error: clientError ? 'invalid_request' : 'server_error',
    error_description: String(err?.message ?? err),
  });
});

// ---------------------------------------------------------------- test state

const stats = { jwks: 0, discovery: 0, token: 0 };
let delayMs = 0;
let jwksCacheControl = null;

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

async function control(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  const q = url.searchParams;
  switch (route) {
    case 'POST /_test/rotate': {
      const kid = await issuer.rotate();
      log('rotated: signing key is now', kid);
      return sendJson(res, 200, { kid });
    }
    case 'POST /_test/withdraw': {
      const kid = q.get('kid');
      if (!kid) return sendJson(res, 400, { error: 'missing kid parameter' });
      if (!(await issuer.withdraw(kid))) {
        return sendJson(res, 404, { error: `unknown kid ${kid}`, kids: issuer.kids });
      }
      log('withdrew', kid, '- signing key is now', issuer.currentKid);
      return sendJson(res, 200, { kids: issuer.kids });
    }
    case 'GET /_test/keys':
      return sendJson(res, 200, { current: issuer.currentKid, kids: issuer.kids });
    case 'GET /_test/stats':
      return sendJson(res, 200, { ...stats });
    case 'POST /_test/reset':
      stats.jwks = 0;
      stats.discovery = 0;
      stats.token = 0;
      return sendJson(res, 200, { ...stats });
    case 'POST /_test/delay': {
      const raw = q.get('ms') ?? '';
      if (!/^\d{1,9}$/.test(raw) || Number(raw) > MAX_DELAY_MS) {
        return sendJson(res, 400, { error: `ms must be an integer in 0..${MAX_DELAY_MS}` });
      }
      delayMs = Number(raw);
      return sendJson(res, 200, { ms: delayMs });
    }
    case 'POST /_test/cache-control': {
      const value = q.get('value');
      if (value === null) return sendJson(res, 400, { error: 'missing value parameter' });
      if (value !== '' && !/^[\x20-\x7e]+$/.test(value)) {
        return sendJson(res, 400, { error: 'value must be printable ASCII' });
      }
      jwksCacheControl = value === '' ? null : value;
      return sendJson(res, 200, { cache_control: jwksCacheControl });
    }
    default: {
      const known = ['rotate', 'withdraw', 'keys', 'stats', 'reset', 'delay', 'cache-control'];
      if (known.includes(url.pathname.slice('/_test/'.length))) {
        return sendJson(res, 405, { error: `wrong method for ${url.pathname}` });
      }
      return sendJson(res, 404, { error: `no test endpoint ${route}` });
    }
  }
}

// ---------------------------------------------------------------- HTTP front

const delegate = (req, res) => service.requestHandler(req, res);

function later(ms, fn) {
  if (ms > 0) setTimeout(fn, ms);
  else fn();
}

function handle(req, res) {
  const url = new URL(req.url ?? '/', issuer.url ?? `http://${HOST}`);
  if (verbose) log(req.method, req.url);
  if (url.pathname.startsWith('/_test/')) {
    control(req, res, url).catch((e) => {
      log('control endpoint failed', e);
      if (!res.headersSent) sendJson(res, 500, { error: String(e?.message ?? e) });
    });
    return;
  }
  // express matches routes case-insensitively and with an optional trailing slash
  const path = url.pathname.toLowerCase().replace(/(.)\/$/, '$1');
  const isGet = req.method === 'GET' || req.method === 'HEAD';
  if (isGet && path === DISCOVERY_PATH) {
    stats.discovery += 1;
    return later(delayMs, () => delegate(req, res));
  }
  if (isGet && path === JWKS_PATH) {
    stats.jwks += 1;
    return later(delayMs, () => {
      if (jwksCacheControl !== null) res.setHeader('Cache-Control', jwksCacheControl);
      delegate(req, res);
    });
  }
  if (req.method === 'POST' && path === TOKEN_PATH) {
    stats.token += 1;
    if (issuer.currentKid === null) {
      return sendJson(res, 503, {
        error: 'temporarily_unavailable',
        error_description: 'every key has been withdrawn; POST /_test/rotate adds one',
      });
    }
  }
  return delegate(req, res);
}

// ---------------------------------------------------------------- start & stop

await issuer.rotate();

const server = createServer(handle);
server.on('clientError', (_err, socket) => socket.destroy());

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, HOST, () => {
    server.off('error', reject);
    resolve();
  });
}).catch((e) => fail(`cannot listen on ${HOST}:${port}: ${e.message}`));

server.on('error', (e) => log('server error', e));
issuer.url = `http://${HOST}:${server.address().port}`;

let stopping = false;
function stop(why) {
  if (stopping) return;
  stopping = true;
  log(`${why}: shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
if (process.env.EXIT_ON_STDIN_CLOSE === '1') {
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.on('error', () => stop('stdin error'));
  process.stdin.resume();
}

log(`listening; issuer ${issuer.url}, signing key ${issuer.currentKid}`);
process.stdout.write(`${JSON.stringify({ issuer: issuer.url })}\n`);
