/**
 * The one client of the jupyter_byok REST API (`{base_url}/byok/*`).
 *
 * Every request goes through `ServerConnection.makeRequest`, which adds the Jupyter token and
 * the XSRF header. The interfaces mirror the JSON written by `jupyter_byok/server/service.py`.
 * Keys travel only in the body of `addKey`; nothing here ever stores or returns one.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ByokApiError, errorFromResponse, networkError, parseBody } from './errors';

export { ByokApiError, SERVER_MISSING } from './errors';

/** Decimal amounts arrive as strings (exact), but tolerate numbers. */
export type Money = string | number | null;

export interface IKeystoreStatus {
  tier: string;
  tier_description: string;
  entries: number | null;
  path?: string;
  home?: string;
  exists?: boolean;
  providers?: string[];
  error?: string;
}

/** A budget as GET /byok/budgets and GET /byok/status report it (limit plus current spend). */
export interface IBudgetStatus {
  id?: string;
  name?: string;
  scope?: string;
  target?: string | null;
  provider?: string | null;
  model?: string | null;
  period?: string;
  limit_usd: Money;
  spent_usd?: Money;
  warn_at?: string | number | null;
  fraction?: number | null;
  state?: string;
  message?: string;
  [extra: string]: unknown;
}

/** GET /byok/status */
export interface IStatus {
  version: string;
  keystore: IKeystoreStatus;
  default_model: string;
  spend_today_usd: Money;
  ledger_error?: string;
  budgets: IBudgetStatus[];
  budgets_error?: string;
}

/** One stored key: metadata only (KeyInfo.to_dict in keystore.py). */
export interface IKeyInfo {
  id: string;
  provider: string;
  name: string;
  kind: string;
  last4: string;
  fingerprint: string;
  created: string;
  updated: string;
  last_verified: string | null;
  tier: string | null;
  base_url: string | null;
  label: string;
  warning: string | null;
}

export interface IProviderKeys {
  provider: string;
  configured: boolean;
  stored: IKeyInfo[];
  env_var: string | null;
  key_url: string | null;
}

/** GET /byok/keys */
export interface IKeysList {
  keys: IKeyInfo[];
  providers: IProviderKeys[];
  tier: string;
  tier_description: string;
}

/** POST /byok/keys body. The key is sent once and never echoed back. */
export interface IAddKey {
  provider: string;
  key: string;
  name?: string;
  tier?: string | null;
  base_url?: string | null;
}

/** POST /byok/keys/{id}/verify */
export interface IVerifyResult {
  id: string;
  label: string;
  ok: boolean;
  latency_s?: number;
  message?: string;
  detail?: string;
  status?: number;
  models?: number | string[];
  [extra: string]: unknown;
}

/** One aggregated group of GET /byok/usage (the `by` fields plus totals). */
export interface IUsageGroup {
  provider?: string | null;
  model?: string | null;
  feature?: string | null;
  notebook?: string | null;
  bucket?: string | null;
  cost_usd?: Money;
  calls?: number;
  [extra: string]: unknown;
}

/** One ledger row of GET /byok/usage `recent`. */
export interface IUsageRow {
  id?: string;
  ts?: string;
  started_at?: string;
  provider?: string;
  model?: string;
  feature?: string;
  notebook?: string | null;
  status?: string;
  input_tokens?: number | null;
  output_tokens?: number | null;
  cost_usd?: Money;
  cost_source?: string | null;
  latency_s?: number | null;
  [extra: string]: unknown;
}

/** GET /byok/usage */
export interface IUsage {
  since: string;
  until: string | null;
  by: string[];
  bucket: string | null;
  groups: IUsageGroup[];
  total_usd: Money;
  recent: IUsageRow[];
}

export interface IUsageQuery {
  since?: string;
  until?: string | null;
  by?: string[];
  bucket?: 'day' | null;
  limit?: number;
}

/** GET /byok/models */
export interface IModels {
  providers: string[];
  models: unknown[];
  aliases: Record<string, string>;
}

/** GET/PUT /byok/config */
export interface IConfig {
  default_model: string | null;
  aliases: Record<string, string>;
  endpoints: Record<string, unknown>;
  require_server: boolean;
  effective_default_model: string;
  [extra: string]: unknown;
}

/** One row of GET /byok/local/models: a local model and its facts. */
export interface ILocalModel {
  name: string;
  id: string;
  path: string | null;
  source: 'embedded' | 'registered' | 'pulled';
  exists: boolean;
  size_bytes: number | null;
  default: boolean;
  downloaded: boolean;
  repo: string | null;
  filename: string | null;
  quantization: string | null;
  parameters: number | null;
  size_label: string | null;
  architecture: string | null;
  context_length: number | null;
  chat_template: boolean | null;
  ram_estimate_bytes: number | null;
  n_gpu_layers: number | string;
  last_used: string | null;
  [extra: string]: unknown;
}

/** A pull started by POST /byok/local/pulls, as GET /byok/local/pulls/ID reports it. */
export interface IPullJob {
  id: string;
  spec: string;
  state: 'running' | 'done' | 'error' | 'cancelled';
  progress: {
    filename?: string;
    total_bytes?: number;
    done_bytes?: number;
    resumed_from?: number;
    speed_bps?: number;
    eta_s?: number | null;
    phase?: string;
  };
  result: { name: string; message: string; size_bytes: number } | null;
  error: string | null;
}

export interface ILocalOverview {
  models: ILocalModel[];
  default: string;
  pulls: IPullJob[];
}

export interface IPullRequest {
  spec: string;
  name?: string;
  quant?: string;
  sha256?: string;
}

/** POST /byok/local/models/NAME/test: a short prompt, answered by a child process. */
export interface ILocalTest {
  name: string;
  text: string;
  output_tokens: number;
  tokens_per_s: number;
  first_token_s: number;
  total_s: number;
}

/**
 * Call the jupyter_byok REST API and return its JSON.
 *
 * @throws {ByokApiError} with a user-facing message: the server's own `message`, or
 *   SERVER_MISSING when the route does not exist, or a network message.
 */
export async function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'byok', endPoint);
  // ServerConnection's default ('no-store') appends a timestamp to GET URLs, which the usage
  // route would read as an unknown filter; the server already answers `no-store` itself.
  const request: RequestInit = { cache: 'no-cache', ...init };
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, request, settings);
  } catch (error) {
    throw networkError(error);
  }
  const data = parseBody(await response.text());
  if (!response.ok) {
    throw errorFromResponse(response.status, response.statusText, data);
  }
  return data as T;
}

function json(method: string, body: unknown): RequestInit {
  return {
    method,
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json' }
  };
}

/** Build the query string of GET /byok/usage. */
export function usageQuery(query: IUsageQuery): string {
  const params = new URLSearchParams();
  params.set('since', query.since || 'today');
  if (query.until) {
    params.set('until', query.until);
  }
  if (query.by && query.by.length) {
    params.set('by', query.by.join(','));
  }
  if (query.bucket) {
    params.set('bucket', query.bucket);
  }
  if (query.limit !== undefined) {
    params.set('limit', String(query.limit));
  }
  return params.toString();
}

/** The typed endpoints, one function per route. */
export const api = {
  status: (): Promise<IStatus> => requestAPI<IStatus>('status'),
  listKeys: (): Promise<IKeysList> => requestAPI<IKeysList>('keys'),
  addKey: (body: IAddKey): Promise<IKeyInfo> =>
    requestAPI<IKeyInfo>('keys', json('POST', body)),
  deleteKey: (id: string): Promise<void> =>
    requestAPI<void>(`keys/${encodeURIComponent(id)}`, { method: 'DELETE' }),
  verifyKey: (id: string): Promise<IVerifyResult> =>
    requestAPI<IVerifyResult>(`keys/${encodeURIComponent(id)}/verify`, { method: 'POST' }),
  usage: (query: IUsageQuery): Promise<IUsage> =>
    requestAPI<IUsage>(`usage?${usageQuery(query)}`),
  models: (): Promise<IModels> => requestAPI<IModels>('models'),
  budgets: (): Promise<{ budgets: IBudgetStatus[] }> =>
    requestAPI<{ budgets: IBudgetStatus[] }>('budgets'),
  setBudgets: (budgets: IBudgetStatus[]): Promise<{ budgets: IBudgetStatus[] }> =>
    requestAPI<{ budgets: IBudgetStatus[] }>('budgets', json('PUT', { budgets })),
  config: (): Promise<IConfig> => requestAPI<IConfig>('config'),
  setConfig: (change: Partial<IConfig>): Promise<IConfig> =>
    requestAPI<IConfig>('config', json('PUT', change)),
  localModels: (): Promise<ILocalOverview> => requestAPI<ILocalOverview>('local/models'),
  pullModel: (body: IPullRequest): Promise<IPullJob> =>
    requestAPI<IPullJob>('local/pulls', json('POST', body)),
  pullStatus: (id: string): Promise<IPullJob> =>
    requestAPI<IPullJob>(`local/pulls/${encodeURIComponent(id)}`),
  cancelPull: (id: string): Promise<IPullJob> =>
    requestAPI<IPullJob>(`local/pulls/${encodeURIComponent(id)}`, { method: 'DELETE' }),
  removeLocal: (name: string): Promise<{ message: string }> =>
    requestAPI<{ message: string }>(`local/models/${encodeURIComponent(name)}`, { method: 'DELETE' }),
  setLocalDefault: (name: string): Promise<{ message: string }> =>
    requestAPI<{ message: string }>('local/default', json('PUT', { name })),
  testLocal: (name: string): Promise<ILocalTest> =>
    requestAPI<ILocalTest>(`local/models/${encodeURIComponent(name)}/test`, json('POST', {}))
};

export type Api = typeof api;

export function isByokError(error: unknown): error is ByokApiError {
  return error instanceof ByokApiError;
}
