/**
 * Turning failed REST calls into one error type with a message a user can act on.
 * Pure (no JupyterLab imports) so that it is unit-tested directly.
 */

/** Shown when the server half of the extension is not loaded (the routes 404). */
export const SERVER_MISSING =
  'The jupyter_byok server extension is not running: install jupyter_byok in the ' +
  "server's Python environment (pip install jupyter_byok), check that " +
  '`jupyter server extension list` shows it enabled, and restart JupyterLab.';

export const NETWORK_DOWN =
  'Cannot reach the Jupyter server: it may have stopped or the connection dropped. ' +
  'Restart it and reload this page.';

/** An error from the jupyter_byok REST API, with the server's error class when it sent one. */
export class ByokApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly error: string | null = null,
    readonly provider: string | null = null
  ) {
    super(message);
    this.name = 'ByokApiError';
  }

  /** True when the server extension itself is missing (no point retrying soon). */
  get serverMissing(): boolean {
    return this.status === 404 && this.error === null;
  }
}

/** Parse a response body: JSON when it is JSON, the text otherwise, null when empty. */
export function parseBody(text: string): unknown {
  if (!text) {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function field(data: unknown, name: string): string | null {
  if (data && typeof data === 'object' && name in data) {
    const value = (data as Record<string, unknown>)[name];
    return value === null || value === undefined ? null : String(value);
  }
  return null;
}

/**
 * Map a non-2xx response to a ByokApiError.
 *
 * The server's JSON errors are `{error, message, status}`. A 404 without that shape means the
 * route is not there at all: the server extension is missing. A 403 without it is jupyter_server
 * refusing the request (expired token or XSRF).
 */
export function errorFromResponse(
  status: number,
  statusText: string,
  data: unknown
): ByokApiError {
  const error = field(data, 'error');
  const message = field(data, 'message');
  const provider = field(data, 'provider');
  if (error === null && message === null) {
    if (status === 404) {
      return new ByokApiError(SERVER_MISSING, 404);
    }
    if (status === 403) {
      return new ByokApiError(
        'The Jupyter server refused the request (403): your session may have expired; reload the page.',
        403
      );
    }
    if (status >= 500) {
      return new ByokApiError(
        `The Jupyter server failed (${status} ${statusText}); see its log.`,
        status
      );
    }
  }
  const text = message || error || statusText || `HTTP ${status}`;
  return new ByokApiError(text, status, error, provider);
}

/** Map a fetch failure (server down, connection refused) to a ByokApiError. */
export function networkError(reason: unknown): ByokApiError {
  const detail = reason instanceof Error ? reason.message : String(reason);
  return new ByokApiError(detail ? `${NETWORK_DOWN} (${detail})` : NETWORK_DOWN, 0);
}

/** A message for any thrown value, for showErrorMessage and notifications. */
export function messageOf(reason: unknown): string {
  if (reason instanceof Error) {
    return reason.message;
  }
  return String(reason);
}
