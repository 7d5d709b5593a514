/**
 * Pure data transforms behind the dashboard, the status bar and the CSV export.
 * No DOM and no JupyterLab imports: every function here is unit-tested.
 */

export type Money = string | number | null | undefined;
export type Dimension = 'provider' | 'model' | 'feature' | 'notebook';
export const DIMENSIONS: Dimension[] = ['provider', 'model', 'feature', 'notebook'];

export type RangeKind = 'today' | '7d' | '30d' | 'custom';

/** A time range as the user picks it: a preset or two dates (YYYY-MM-DD, inclusive). */
export interface IRange {
  kind: RangeKind;
  from?: string;
  to?: string;
}

/** Amounts arrive as exact decimal strings; null means "unknown" (an unpriced model). */
export function toNumber(value: unknown): number | null {
  if (value === null || value === undefined || value === '') {
    return null;
  }
  const n = typeof value === 'number' ? value : Number(value);
  return Number.isFinite(n) ? n : null;
}

/** US dollars with enough digits for sub-cent calls: $0.000123, $0.0123, $1.23, $1,234.50. */
export function formatUSD(value: Money): string {
  const n = toNumber(value);
  if (n === null) {
    return 'unknown';
  }
  const abs = Math.abs(n);
  const tiny = abs > 0 && abs < 0.01;
  const text = abs.toLocaleString('en-US', {
    minimumFractionDigits: tiny ? 4 : 2,
    maximumFractionDigits: tiny ? 8 : abs < 1 ? 4 : 2
  });
  return `${n < 0 ? '-' : ''}$${text}`;
}

/** Turn a user's range into the `since`/`until` of GET /byok/usage. */
export function rangeToQuery(range: IRange): { since: string; until: string | null } {
  if (range.kind !== 'custom') {
    return { since: range.kind, until: null };
  }
  const day = /^\d{4}-\d{2}-\d{2}$/;
  if (!range.from || !day.test(range.from)) {
    throw new Error('Pick a start date for the custom range.');
  }
  if (range.to && !day.test(range.to)) {
    throw new Error('The end date must be a date (YYYY-MM-DD).');
  }
  if (range.to && range.to < range.from) {
    throw new Error('The end date is before the start date.');
  }
  // `until` is exclusive on the server: the day after the inclusive end date.
  return { since: range.from, until: range.to ? nextDay(range.to) : null };
}

export function nextDay(day: string): string {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
}

/** The cost of a group or row, whatever the server named the field. */
export function costOf(row: Record<string, unknown>): number | null {
  for (const name of ['cost_usd', 'cost', 'total_usd', 'spent_usd']) {
    if (name in row) {
      return toNumber(row[name]);
    }
  }
  return null;
}

export function callsOf(row: Record<string, unknown>): number {
  for (const name of ['calls', 'count', 'n', 'rows']) {
    const n = toNumber(row[name]);
    if (n !== null) {
      return n;
    }
  }
  return 1;
}

/** Calls in a group whose cost is unknown (unpriced models), as the ledger counts them. */
export function unknownOf(row: Record<string, unknown>): number {
  return toNumber(row.unknown_cost_calls) ?? 0;
}

export interface IBar {
  label: string;
  cost: number;
  calls: number;
  unknown: number;
}

/**
 * Sum groups over one dimension and sort by cost, largest first, keeping at most `top`
 * bars and folding the rest into "other". Groups may be grouped by several fields at once.
 */
export function barsBy(
  groups: Array<Record<string, unknown>>,
  dimension: Dimension,
  top = 8
): IBar[] {
  const sums = new Map<string, IBar>();
  for (const group of groups) {
    const raw = group[dimension];
    const label = raw === null || raw === undefined || raw === '' ? '(none)' : String(raw);
    const bar = sums.get(label) ?? { label, cost: 0, calls: 0, unknown: 0 };
    const cost = costOf(group);
    if (cost === null) {
      bar.unknown += callsOf(group);
    } else {
      bar.cost += cost;
      bar.unknown += unknownOf(group);
    }
    bar.calls += callsOf(group);
    sums.set(label, bar);
  }
  const bars = [...sums.values()].sort(
    (a, b) => b.cost - a.cost || b.calls - a.calls || a.label.localeCompare(b.label)
  );
  if (bars.length <= top) {
    return bars;
  }
  const rest = bars.slice(top - 1);
  const other: IBar = { label: `other (${rest.length})`, cost: 0, calls: 0, unknown: 0 };
  for (const bar of rest) {
    other.cost += bar.cost;
    other.calls += bar.calls;
    other.unknown += bar.unknown;
  }
  return [...bars.slice(0, top - 1), other];
}

/** Short label for a notebook path (its file name), keeping the full path for the tooltip. */
export function shortLabel(label: string, max = 28): string {
  const base = label.includes('/') ? label.slice(label.lastIndexOf('/') + 1) || label : label;
  return base.length > max ? `${base.slice(0, max - 1)}…` : base;
}

export interface ITotals {
  cost: number;
  calls: number;
  unknownCalls: number;
  errors: number;
}

/** Totals over groups (which cover the whole range, unlike the limited recent rows). */
export function totals(groups: Array<Record<string, unknown>>, total?: Money): ITotals {
  let cost = 0;
  let calls = 0;
  let unknownCalls = 0;
  let errors = 0;
  for (const group of groups) {
    const c = costOf(group);
    const n = callsOf(group);
    calls += n;
    if (c === null) {
      unknownCalls += n;
    } else {
      cost += c;
      unknownCalls += unknownOf(group);
    }
    const status = group.status;
    if (typeof status === 'string' && status !== 'ok' && status !== 'success') {
      errors += n;
    }
  }
  const server = toNumber(total);
  return { cost: server === null ? cost : server, calls, unknownCalls, errors };
}

export const TABLE_COLUMNS: Array<{ key: string; title: string }> = [
  { key: 'ts', title: 'Time' },
  { key: 'provider', title: 'Provider' },
  { key: 'model', title: 'Model' },
  { key: 'feature', title: 'Feature' },
  { key: 'notebook', title: 'Notebook' },
  { key: 'status', title: 'Status' },
  { key: 'input_tokens', title: 'In' },
  { key: 'output_tokens', title: 'Out' },
  { key: 'cost_usd', title: 'Cost' },
  { key: 'latency_s', title: 'Latency' }
];

export function timeOf(row: Record<string, unknown>): string {
  const value = row.ts ?? row.started_at ?? row.start ?? row.created ?? '';
  return String(value ?? '');
}

/** The cells of the recent-calls table, formatted for display. */
export function tableRow(row: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const { key } of TABLE_COLUMNS) {
    let value: unknown = key === 'ts' ? timeOf(row) : row[key];
    if (key === 'ts') {
      value = formatTime(String(value));
    } else if (key === 'cost_usd') {
      value = formatUSD(row.cost_usd as Money);
    } else if (key === 'latency_s') {
      const n = toNumber(value);
      value = n === null ? '' : `${n.toFixed(2)} s`;
    } else if (key === 'notebook') {
      value = value ? shortLabel(String(value)) : '';
    }
    out[key] = value === null || value === undefined ? '' : String(value);
  }
  return out;
}

/** Local time "YYYY-MM-DD HH:MM:SS" for an ISO timestamp (UTC when it has no zone). */
export function formatTime(iso: string): string {
  if (!iso) {
    return '';
  }
  const hasZone = /([zZ]|[+-]\d{2}:?\d{2})$/.test(iso);
  const d = new Date(hasZone ? iso : `${iso.replace(' ', 'T')}Z`);
  if (Number.isNaN(d.getTime())) {
    return iso;
  }
  const pad = (n: number) => String(n).padStart(2, '0');
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/**
 * One CSV cell (RFC 4180), also defusing spreadsheet formulas: a cell that starts with
 * = + - @ or a tab/CR gets a leading apostrophe (OWASP CSV injection), unless it is a number.
 */
export function csvCell(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  let text = typeof value === 'object' ? JSON.stringify(value) : String(value);
  if (/^[=+\-@\t\r]/.test(text) && !/^[+-]?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(text)) {
    text = `'${text}`;
  }
  if (/[",\r\n]/.test(text)) {
    text = `"${text.replace(/"/g, '""')}"`;
  }
  return text;
}

/** CSV of ledger rows: the union of their columns, the usual ones first; CRLF line ends. */
export function toCSV(rows: Array<Record<string, unknown>>): string {
  const preferred = [
    'ts',
    'provider',
    'model',
    'feature',
    'notebook',
    'status',
    'input_tokens',
    'output_tokens',
    'cost_usd',
    'cost_source',
    'latency_s',
    'request_id'
  ];
  const seen = new Set<string>();
  for (const row of rows) {
    for (const key of Object.keys(row)) {
      seen.add(key);
    }
  }
  const columns = [
    ...preferred.filter(k => seen.has(k)),
    ...[...seen].filter(k => !preferred.includes(k)).sort()
  ];
  const lines = [columns.map(csvCell).join(',')];
  for (const row of rows) {
    lines.push(columns.map(c => csvCell(row[c])).join(','));
  }
  return lines.join('\r\n') + '\r\n';
}

export function csvFileName(range: IRange, now: Date = new Date()): string {
  const stamp = now.toISOString().slice(0, 10);
  const part = range.kind === 'custom' ? `${range.from}_${range.to || stamp}` : range.kind;
  return `byok-usage-${part}-${stamp}.csv`;
}

export type BudgetState = 'none' | 'ok' | 'warning' | 'exceeded';

export interface IBudgetLike {
  limit_usd?: Money;
  spent_usd?: Money;
  warn_at?: string | number | null;
  state?: string;
  [extra: string]: unknown;
}

/** How far a budget is used (0..n) and its state, trusting the server's state when given. */
export function budgetProgress(budget: IBudgetLike): { fraction: number; state: BudgetState } {
  const limit = toNumber(budget.limit_usd);
  const spent = toNumber(budget.spent_usd) ?? 0;
  const fraction = limit && limit > 0 ? spent / limit : 0;
  const given = (budget.state || '').toLowerCase();
  if (['exceeded', 'blocked', 'over', 'block'].includes(given)) {
    return { fraction, state: 'exceeded' };
  }
  if (['warning', 'warn'].includes(given)) {
    return { fraction, state: 'warning' };
  }
  if (['ok', 'under'].includes(given)) {
    return { fraction, state: 'ok' };
  }
  const warnAt = toNumber(budget.warn_at) ?? 0.8;
  if (limit !== null && limit >= 0 && spent >= limit && limit > 0) {
    return { fraction, state: 'exceeded' };
  }
  if (fraction >= warnAt) {
    return { fraction, state: 'warning' };
  }
  return { fraction, state: 'ok' };
}

/** The worst state over all budgets ('none' when there are none). */
export function worstBudget(budgets: IBudgetLike[] | null | undefined): {
  state: BudgetState;
  budget: IBudgetLike | null;
} {
  const rank: Record<BudgetState, number> = { none: 0, ok: 1, warning: 2, exceeded: 3 };
  let best: { state: BudgetState; budget: IBudgetLike | null; fraction: number } = {
    state: 'none',
    budget: null,
    fraction: -1
  };
  for (const budget of budgets || []) {
    const { state, fraction } = budgetProgress(budget);
    if (
      rank[state] > rank[best.state] ||
      (rank[state] === rank[best.state] && fraction > best.fraction)
    ) {
      best = { state, budget, fraction };
    }
  }
  return { state: best.state, budget: best.budget };
}

/** A budget's human name: "Daily, openai", "Monthly, all providers". */
export function budgetLabel(budget: IBudgetLike): string {
  const period = String(budget.period ?? '');
  const when =
    period === 'day' || period === 'daily'
      ? 'Daily'
      : period === 'month' || period === 'monthly'
        ? 'Monthly'
        : period === 'call'
          ? 'Per call'
          : period || 'Budget';
  const target = budget.target ?? budget.model ?? budget.provider ?? null;
  const scope = String(budget.scope ?? (target ? '' : 'total'));
  const what = target
    ? String(target)
    : scope === 'total' || scope === 'global' || !scope
      ? 'all calls'
      : scope;
  return `${when}, ${what}`;
}

/** Mask shown for a stored key: only its last four characters, as the server gives them. */
export function maskedKey(last4: string | null | undefined): string {
  const tail = (last4 || '').slice(-4);
  return tail ? `••••${tail}` : '••••';
}

/**
 * Status-bar polling with backoff: the base interval after a change or a trigger, growing by
 * `factor` while nothing changes or requests fail, up to `max`.
 */
export class Backoff {
  private current: number;

  constructor(
    readonly base: number,
    readonly max: number = base * 10,
    readonly factor: number = 1.5
  ) {
    this.current = base;
  }

  get interval(): number {
    return this.current;
  }

  /** After a poll: reset when the data changed, grow otherwise. Returns the next delay. */
  next(changed: boolean): number {
    this.current = changed ? this.base : Math.min(this.max, Math.round(this.current * this.factor));
    return this.current;
  }

  /** After an error: grow twice as fast. */
  fail(): number {
    this.current = Math.min(this.max, Math.round(this.current * this.factor * 2));
    return this.current;
  }

  reset(): number {
    this.current = this.base;
    return this.current;
  }
}

/** "3 min ago", "2 h ago", "5 d ago" for a last-verified time. */
export function ago(iso: string | null | undefined, now: Date = new Date()): string {
  if (!iso) {
    return 'never';
  }
  const hasZone = /([zZ]|[+-]\d{2}:?\d{2})$/.test(iso);
  const then = new Date(hasZone ? iso : `${iso}Z`);
  const seconds = Math.round((now.getTime() - then.getTime()) / 1000);
  if (Number.isNaN(seconds)) {
    return iso;
  }
  if (seconds < 60) {
    return 'just now';
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min ago`;
  }
  if (seconds < 86400) {
    return `${Math.floor(seconds / 3600)} h ago`;
  }
  return `${Math.floor(seconds / 86400)} d ago`;
}
