// Thin client of the visage HTTP API (docs/API.md). Same origin, session cookie.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = null;
/** Called (once per failing request) when the API answers 401: the session ended. */
export function setUnauthorizedHandler(f) { onUnauthorized = f; }

/**
 * Calls the API. `body`: a FormData (multipart), a plain object (JSON) or undefined.
 * Resolves to the parsed JSON (or text); rejects with ApiError carrying the API's code.
 */
export async function api(method, path, body, { quiet401 = false } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', 'The server could not be reached: ' + e.message);
  }
  const ctype = res.headers.get('content-type') || '';
  const data = ctype.startsWith('application/json') ? await res.json().catch(() => null) : await res.text();
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: 'http_' + res.status, message: res.statusText };
    if (res.status === 401 && !quiet401 && onUnauthorized) onUnauthorized();
    throw new ApiError(res.status, err.code, err.message);
  }
  return data;
}

export const get = (path, opts) => api('GET', path, undefined, opts);
export const post = (path, body, opts) => api('POST', path, body, opts);
