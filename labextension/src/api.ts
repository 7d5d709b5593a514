/**
 * The one client of the jupyter_byok REST API (`{base_url}/byok/*`).
 *
 * Every request goes through `ServerConnection.makeRequest`, which adds the Jupyter token and
 * the XSRF header. The interfaces mirror the reply shapes in `jupyter_byok/server/_replies.py`
 * and the request bodies in `jupyter_byok/server/_wire.py` (field names and which are required;
 * `tests/test_wire_shapes.py` compares them): change both sides together.
 * Keys travel only in the body of `addKey`; nothing here ever stores or returns one.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ByokApiError, errorFromResponse, networkError, parseBody } from './errors';

export { ByokApiError, SERVER_MISSING } from './errors';

/** Decimal amounts arrive as strings (exact), but tolerate numbers. */
export type Money = string | number | null;

/** Keystore.status(): protection tier, file locations and counts. */
export interface IKeystoreStatus {
  tier: string;
  tier_description: string;
  entries: number | null;
  path: string;
  home: string;
  exists: boolean;
  machine_id_available: boolean;
  providers: string[];
  key_file?: string;
  error?: string;
}

/** Ledger.health(): whether rows can be written, and what is kept pending. */
export interface ILedgerHealth {
  path: string;
  writable: boolean;
  error: string | null;
  pending: number;
  pending_cost_usd: Money;
  failed_writes: number;
  last_error: string | null;
  last_error_at: string | null;
  free_bytes: number | null;
  total_bytes: number | null;
  /** `postgresql`: a shared ledger (docs/jupyterhub.md), with the fields below */
  backend?: 'sqlite' | 'postgresql';
  url?: string;
  reachable?: boolean;
  /** rows waiting in the local spool; -1 while the database is unreachable */
  spooled?: number;
}

/**
 * A budget as PUT /byok/budgets takes it (each item is read by Budget.from_json, which
 * ignores other fields).
 */
export interface IBudget {
  period: string;
  limit_usd: Money;
  /** `total` when absent */
  scope?: string;
  target?: string | null;
  /** 0.8 when absent */
  warn_at?: string | number;
  [extra: string]: unknown;
}

/** A budget as GET /byok/budgets and GET /byok/status report it (limit plus current spend). */
export interface IBudgetStatus extends IBudget {
  scope: string;
  target: string | null;
  warn_at: string | number;
  name: string;
  /** null for a per-call budget */
  spent_usd: Money;
  fraction: number | null;
  state: 'ok' | 'warning' | 'exceeded';
}

/** GET and PUT /byok/budgets */
export interface IBudgets {
  budgets: IBudgetStatus[];
}

/** GET /byok/status */
export interface IStatus {
  version: string;
  as_of: number;
  keystore: IKeystoreStatus;
  default_model: string;
  spend_today_usd: Money;
  ledger_error: string | null;
  ledger: ILedgerHealth;
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
  name?: string | null;
  tier?: string | null;
  base_url?: string | null;
  allow_http?: boolean;
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

/**
 * One aggregated group of GET /byok/usage (Ledger.summary): the `by` fields (and `bucket`)
 * that name it, then its totals. `cost_usd` is a float for charts, `cost_usd_exact` exact.
 */
export interface IUsageGroup {
  bucket?: string | null;
  provider?: string | null;
  model?: string | null;
  key_name?: string | null;
  feature?: string | null;
  notebook?: string | null;
  cell_id?: string | null;
  pipeline?: string | null;
  node?: string | null;
  status?: string | null;
  error_type?: string | null;
  cost_source?: string | null;
  price_version?: string | null;
  request_id?: string | null;
  calls: number;
  unknown_cost_calls: number;
  input_tokens: number;
  cached_input_tokens: number;
  cache_write_tokens: number;
  cache_write_1h_tokens: number;
  output_tokens: number;
  reasoning_tokens: number;
  search_credits: number;
  cost_usd: number;
  cost_usd_exact: string;
  saved_usd: number;
  [extra: string]: unknown;
}

/** One ledger row of GET /byok/usage `recent` (Ledger.recent): one attempt. */
export interface IUsageRow {
  id: string;
  request_id: string;
  attempt: number;
  ts: string;
  ts_end: string;
  provider: string;
  model: string;
  key_name: string | null;
  feature: string;
  notebook: string | null;
  cell_id: string | null;
  pipeline: string | null;
  node: string | null;
  status: string;
  http_status: number | null;
  error_type: string | null;
  response_id: string | null;
  input_tokens: number;
  cached_input_tokens: number;
  cache_write_tokens: number;
  cache_write_1h_tokens: number;
  output_tokens: number;
  reasoning_tokens: number;
  search_credits: number;
  cost_usd: Money;
  cost_source: string;
  price_version: string;
  latency_s: number | null;
  ttft_s: number | null;
  stream: boolean;
  cache_hit: boolean;
  saved_usd: Money;
  /** who and where (null on rows older than the shared ledger's migration) */
  user_name: string | null;
  team: string | null;
  server: string | null;
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

/** Whose rows a shared ledger shows: `team` and `all` need the jupyter_byok:team permission. */
export type UsageScope = 'me' | 'team' | 'all';

export interface IUsageQuery {
  since?: string;
  until?: string | null;
  by?: string[];
  bucket?: 'day' | null;
  limit?: number;
  scope?: UsageScope;
}

/** GET /byok/models */
export interface IModels {
  providers: string[];
  models: unknown[];
  aliases: Record<string, string>;
  /** every model id for a picker: local models first, then priced models and aliases */
  choices: string[];
}

/** A user endpoint (config.Endpoint). */
export interface IEndpoint {
  base_url: string;
  wire: string;
  needs_key: boolean;
  key_name: string;
  allow_http: boolean;
}

/** GET/PUT /byok/config: the settings, and the default model actually used. */
export interface IConfig {
  version: number;
  default_model: string | null;
  aliases: Record<string, string>;
  endpoints: Record<string, IEndpoint>;
  local_models: Record<string, string>;
  local_prices: Record<string, Record<string, string>>;
  require_server: boolean;
  local_extra_buffers: string;
  effective_default_model: string;
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
  sha256: string | null;
  pulled_at: string | null;
  quantization: string | null;
  parameters: number | null;
  size_label: string | null;
  architecture: string | null;
  context_length: number | null;
  chat_template: boolean | null;
  ram_estimate_bytes: number | null;
  facts_error: string | null;
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
  started: number;
}

/** GET /byok/local/models */
export interface ILocalOverview {
  models: ILocalModel[];
  default: string;
  pulls: IPullJob[];
  gpu_layers_default: number | string;
}

/** GET /byok/local/pulls */
export interface IPulls {
  pulls: IPullJob[];
}

/** POST /byok/local/pulls body. */
export interface IPullRequest {
  spec: string;
  name?: string | null;
  quant?: string | null;
  sha256?: string | null;
  n_gpu_layers?: string | number | null;
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
/** One provider batch (GET /byok/batches; Python: batch._store.BatchDict). */
export interface IBatch {
  id: string;
  fingerprint: string;
  part: number;
  pipeline: string | null;
  node: string | null;
  notebook: string | null;
  provider: string;
  model: string;
  key_name: string | null;
  provider_batch_id: string | null;
  state: string;
  total: number;
  done: number;
  failed: number;
  /** microseconds since the epoch, UTC */
  created: number;
  updated: number;
  /** 1 once its results are in the ledger */
  fetched: number;
  message: string | null;
}

export interface IBatches {
  batches: IBatch[];
}

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
  if (query.scope) {
    params.set('scope', query.scope);
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
  budgets: (): Promise<IBudgets> => requestAPI<IBudgets>('budgets'),
  setBudgets: (budgets: IBudget[]): Promise<IBudgets> =>
    requestAPI<IBudgets>('budgets', json('PUT', { budgets })),
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
  batches: (): Promise<IBatches> => requestAPI<IBatches>('batches?limit=50'),
  refreshBatch: (id: string): Promise<IBatch> =>
    requestAPI<IBatch>(`batches/${encodeURIComponent(id)}/refresh`, json('POST', {})),
  cancelBatch: (id: string): Promise<IBatch> =>
    requestAPI<IBatch>(`batches/${encodeURIComponent(id)}/cancel`, json('POST', {})),
  testLocal: (name: string): Promise<ILocalTest> =>
    requestAPI<ILocalTest>(`local/models/${encodeURIComponent(name)}/test`, json('POST', {}))
};

export type Api = typeof api;

export function isByokError(error: unknown): error is ByokApiError {
  return error instanceof ByokApiError;
}
