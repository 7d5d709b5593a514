import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The shape of GET /byok/status (mirrors jupyter_byok.server). */
export interface IStatus {
  version: string;
  keystore: { tier: string; tier_description: string; entries: number | null };
}

export class ByokApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

/** Message shown when the server half of the extension is not loaded. */
export const SERVER_MISSING =
  'The jupyter_byok server extension is not running: install jupyter_byok in the ' +
  "server's Python environment and restart JupyterLab.";

/**
 * Call the jupyter_byok REST API. Token and XSRF handling come from ServerConnection.
 */
export async function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'byok', endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: any = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
  }
  if (!response.ok) {
    if (response.status === 404 && !(data && data.error)) {
      throw new ByokApiError(SERVER_MISSING, 404);
    }
    const message = (data && (data.message || data.error)) || response.statusText;
    throw new ByokApiError(String(message), response.status);
  }
  return data as T;
}
