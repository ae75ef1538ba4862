// The browser mode's access token: random per start, accepted from the `token` query parameter
// or from the cookie that the first tokened request sets. Compared in constant time.
import crypto from 'node:crypto';
import type http from 'node:http';

/** The token's cookie, named per port: cookies are shared by every port of a host, so two
 *  `calibscope serve` instances on 127.0.0.1 would otherwise overwrite each other's token. */
export function cookieName(port: number): string {
  return `calibscope_token_${port}`;
}

export function newToken(): string {
  return crypto.randomBytes(24).toString('base64url');
}

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

export function cookieToken(header: string | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() !== name) continue;
    // A malformed %-escape is simply a wrong token: decodeURIComponent's URIError must not escape
    // (in the WebSocket upgrade it would be an uncaught exception, ending the server).
    try {
      return decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      return null;
    }
  }
  return null;
}

export interface AuthResult {
  ok: boolean;
  /** True when the token came in the query: the response sets the cookie. */
  fromQuery: boolean;
}

export function authenticate(req: http.IncomingMessage, url: URL, token: string, port: number): AuthResult {
  const q = url.searchParams.get('token');
  if (q !== null && sameToken(q, token)) return { ok: true, fromQuery: true };
  const c = cookieToken(req.headers.cookie, cookieName(port));
  if (c !== null && sameToken(c, token)) return { ok: true, fromQuery: false };
  return { ok: false, fromQuery: false };
}

export function setCookieHeader(token: string, port: number): string {
  // HttpOnly: scripts never see it; SameSite=Strict: other sites cannot send it along.
  return `${cookieName(port)}=${encodeURIComponent(token)}; Path=/; HttpOnly; SameSite=Strict`;
}
