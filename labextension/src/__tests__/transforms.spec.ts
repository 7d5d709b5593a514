import {
  ago,
  Backoff,
  barsBy,
  budgetLabel,
  budgetProgress,
  csvCell,
  csvFileName,
  formatTime,
  formatUSD,
  maskedKey,
  nextDay,
  rangeToQuery,
  shortLabel,
  tableRow,
  toCSV,
  toNumber,
  totals,
  worstBudget
} from '../transforms';

// Groups as ledger.summary(by=[provider, model, feature, notebook]) returns them.
const GROUPS = [
  { provider: 'openai', model: 'gpt-4o-mini', feature: 'magic', notebook: '/w/a.ipynb', calls: 3, unknown_cost_calls: 0, cost_usd: 0.0003, cost_usd_exact: '0.0003' },
  { provider: 'openai', model: 'gpt-4o', feature: 'pipeline', notebook: '/w/b.ipynb', calls: 1, unknown_cost_calls: 0, cost_usd: 0.01, cost_usd_exact: '0.01' },
  { provider: 'anthropic', model: 'claude-sonnet-4-6', feature: 'magic', notebook: '/w/a.ipynb', calls: 2, unknown_cost_calls: 0, cost_usd: 0.02, cost_usd_exact: '0.02' },
  { provider: 'ollama', model: 'llama3.2', feature: 'api', notebook: null, calls: 4, unknown_cost_calls: 4, cost_usd: 0, cost_usd_exact: '0' }
];

describe('money', () => {
  it('parses decimal strings and rejects junk', () => {
    expect(toNumber('0.000123')).toBeCloseTo(0.000123, 12);
    expect(toNumber(2)).toBe(2);
    expect(toNumber(null)).toBeNull();
    expect(toNumber('')).toBeNull();
    expect(toNumber('abc')).toBeNull();
  });

  it('formats dollars with enough digits for tiny calls', () => {
    expect(formatUSD('0')).toBe('$0.00');
    expect(formatUSD('1.5')).toBe('$1.50');
    expect(formatUSD(1234.5)).toBe('$1,234.50');
    expect(formatUSD('0.0123')).toBe('$0.0123');
    expect(formatUSD('0.000123')).toBe('$0.000123');
    expect(formatUSD('0.00000015')).toBe('$0.00000015');
    expect(formatUSD(null)).toBe('unknown');
    expect(formatUSD(-0.5)).toBe('-$0.50');
  });
});

describe('ranges', () => {
  it('passes presets through', () => {
    expect(rangeToQuery({ kind: 'today' })).toEqual({ since: 'today', until: null });
    expect(rangeToQuery({ kind: '7d' })).toEqual({ since: '7d', until: null });
    expect(rangeToQuery({ kind: '30d' })).toEqual({ since: '30d', until: null });
  });

  it('makes a custom end date inclusive', () => {
    expect(rangeToQuery({ kind: 'custom', from: '2026-02-27', to: '2026-02-28' })).toEqual({
      since: '2026-02-27',
      until: '2026-03-01'
    });
    expect(rangeToQuery({ kind: 'custom', from: '2026-01-01' })).toEqual({ since: '2026-01-01', until: null });
    expect(nextDay('2024-12-31')).toBe('2025-01-01');
  });

  it('refuses a custom range without a start or ending before it starts', () => {
    expect(() => rangeToQuery({ kind: 'custom' })).toThrow(/start date/);
    expect(() => rangeToQuery({ kind: 'custom', from: '2026-02-02', to: '2026-02-01' })).toThrow(/before/);
    expect(() => rangeToQuery({ kind: 'custom', from: 'yesterday' })).toThrow();
  });
});

describe('chart data', () => {
  it('sums groups over one dimension, largest cost first', () => {
    const bars = barsBy(GROUPS, 'provider');
    expect(bars.map(b => b.label)).toEqual(['anthropic', 'openai', 'ollama']);
    expect(bars[1].cost).toBeCloseTo(0.0103, 10);
    expect(bars[1].calls).toBe(4);
    expect(bars[2]).toMatchObject({ cost: 0, calls: 4, unknown: 4 });
  });

  it('labels missing values and sums by feature and notebook', () => {
    expect(barsBy(GROUPS, 'feature').map(b => [b.label, b.calls])).toEqual([
      ['magic', 5],
      ['pipeline', 1],
      ['api', 4]
    ]);
    expect(barsBy(GROUPS, 'notebook').map(b => b.label)).toEqual(['/w/a.ipynb', '/w/b.ipynb', '(none)']);
  });

  it('folds the long tail into "other"', () => {
    const many = Array.from({ length: 12 }, (_, i) => ({ model: `m${i}`, cost_usd: 12 - i, calls: 1 }));
    const bars = barsBy(many, 'model', 5);
    expect(bars).toHaveLength(5);
    expect(bars[4].label).toBe('other (8)');
    expect(bars[4].cost).toBe(8 + 7 + 6 + 5 + 4 + 3 + 2 + 1);
    expect(bars[4].calls).toBe(8);
  });

  it('treats a null cost as unknown, not zero-priced', () => {
    const bars = barsBy([{ provider: 'x', cost_usd: null, calls: 2 }], 'provider');
    expect(bars[0]).toMatchObject({ cost: 0, calls: 2, unknown: 2 });
  });

  it('totals prefer the exact server total', () => {
    expect(totals(GROUPS, '0.0303')).toEqual({ cost: 0.0303, calls: 10, unknownCalls: 4, errors: 0 });
    expect(totals(GROUPS).cost).toBeCloseTo(0.0303, 10);
    expect(totals([]).calls).toBe(0);
  });

  it('shortens notebook paths to their file name', () => {
    expect(shortLabel('/home/me/work/analysis.ipynb')).toBe('analysis.ipynb');
    expect(shortLabel('x'.repeat(40), 10)).toBe('xxxxxxxxx…');
  });
});

describe('table and CSV', () => {
  const row = {
    id: '1',
    ts: '2026-03-01T10:00:00.123456+00:00',
    provider: 'openai',
    model: 'gpt-4o-mini',
    feature: 'magic',
    notebook: '/w/a.ipynb',
    status: 'ok',
    input_tokens: 12,
    output_tokens: 7,
    cost_usd: '0.0000060',
    latency_s: 0.1234
  };

  it('formats a recent-calls row', () => {
    const cells = tableRow(row);
    expect(cells.provider).toBe('openai');
    expect(cells.notebook).toBe('a.ipynb');
    expect(cells.cost_usd).toBe('$0.000006');
    expect(cells.latency_s).toBe('0.12 s');
    expect(cells.ts).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/);
    expect(tableRow({ ...row, cost_usd: null, latency_s: null }).cost_usd).toBe('unknown');
  });

  it('formats times with and without a zone', () => {
    expect(formatTime('')).toBe('');
    expect(formatTime('garbage')).toBe('garbage');
    const d = new Date('2026-03-01T10:00:00Z');
    const pad = (n: number) => String(n).padStart(2, '0');
    expect(formatTime('2026-03-01T10:00:00')).toBe(
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:00:00`
    );
  });

  it('quotes CSV cells per RFC 4180', () => {
    expect(csvCell('plain')).toBe('plain');
    expect(csvCell('a,b')).toBe('"a,b"');
    expect(csvCell('say "hi"')).toBe('"say ""hi"""');
    expect(csvCell('two\nlines')).toBe('"two\nlines"');
    expect(csvCell(null)).toBe('');
    expect(csvCell(0)).toBe('0');
    expect(csvCell({ a: 1 })).toBe('"{""a"":1}"');
  });

  it('defuses spreadsheet formulas but keeps negative numbers', () => {
    expect(csvCell('=HYPERLINK("http://x")')).toBe('"\'=HYPERLINK(""http://x"")"');
    expect(csvCell('@SUM(A1)')).toBe("'@SUM(A1)");
    expect(csvCell('+1+2')).toBe("'+1+2");
    expect(csvCell('-0.5')).toBe('-0.5');
    expect(csvCell(-3)).toBe('-3');
  });

  it('writes the usual columns first, then the rest sorted, CRLF-terminated', () => {
    const csv = toCSV([row, { ...row, id: '2', extra: 'x,y' }]);
    const lines = csv.split('\r\n');
    expect(lines[0]).toBe(
      'ts,provider,model,feature,notebook,status,input_tokens,output_tokens,cost_usd,latency_s,extra,id'
    );
    expect(lines[1]).toBe(
      '2026-03-01T10:00:00.123456+00:00,openai,gpt-4o-mini,magic,/w/a.ipynb,ok,12,7,0.0000060,0.1234,,1'
    );
    expect(lines[2].endsWith(',"x,y",2')).toBe(true);
    expect(lines[3]).toBe('');
    expect(toCSV([])).toBe('\r\n');
  });

  it('names the export after its range', () => {
    const now = new Date('2026-03-05T12:00:00Z');
    expect(csvFileName({ kind: '7d' }, now)).toBe('byok-usage-7d-2026-03-05.csv');
    expect(csvFileName({ kind: 'custom', from: '2026-03-01', to: '2026-03-02' }, now)).toBe(
      'byok-usage-2026-03-01_2026-03-02-2026-03-05.csv'
    );
  });
});

describe('budgets', () => {
  it("trusts the server's state and computes the fraction", () => {
    expect(budgetProgress({ limit_usd: '10', spent_usd: '9', state: 'warning' })).toEqual({ fraction: 0.9, state: 'warning' });
    expect(budgetProgress({ limit_usd: '10', spent_usd: '12', state: 'exceeded' }).state).toBe('exceeded');
    expect(budgetProgress({ limit_usd: '10', spent_usd: '1', state: 'ok' }).state).toBe('ok');
  });

  it('derives the state from the warning threshold when the server gives none', () => {
    expect(budgetProgress({ limit_usd: '10', spent_usd: '7.9' }).state).toBe('ok');
    expect(budgetProgress({ limit_usd: '10', spent_usd: '8' }).state).toBe('warning');
    expect(budgetProgress({ limit_usd: '10', spent_usd: '5', warn_at: 0.5 }).state).toBe('warning');
    expect(budgetProgress({ limit_usd: '10', spent_usd: '10' }).state).toBe('exceeded');
    expect(budgetProgress({ limit_usd: '0', spent_usd: '0' })).toEqual({ fraction: 0, state: 'ok' });
  });

  it('picks the worst budget for the status bar', () => {
    expect(worstBudget([])).toEqual({ state: 'none', budget: null });
    expect(worstBudget(null)).toEqual({ state: 'none', budget: null });
    const a = { limit_usd: '10', spent_usd: '1' };
    const b = { limit_usd: '1', spent_usd: '0.9' };
    const c = { limit_usd: '1', spent_usd: '0.5' };
    expect(worstBudget([a, b, c]).budget).toBe(b);
    expect(worstBudget([a, c]).budget).toBe(c);
  });

  it('names budgets', () => {
    expect(budgetLabel({ period: 'day', scope: 'total' })).toBe('Daily, all calls');
    expect(budgetLabel({ period: 'call', scope: 'model', target: 'openai:gpt-4o' })).toBe('Per call, openai:gpt-4o');
    expect(budgetLabel({ period: 'month', scope: 'provider', target: 'openai' })).toBe('Monthly, openai');
    expect(budgetLabel({ period: 'monthly', model: 'openai:gpt-4o' })).toBe('Monthly, openai:gpt-4o');
  });
});

describe('keys and polling', () => {
  it('masks to the last four characters at most', () => {
    expect(maskedKey('WXYZ')).toBe('••••WXYZ');
    expect(maskedKey('abcdefWXYZ')).toBe('••••WXYZ');
    expect(maskedKey('')).toBe('••••');
    expect(maskedKey(null)).toBe('••••');
  });

  it('backs off while nothing changes and resets on change', () => {
    const b = new Backoff(1000, 5000, 2);
    expect(b.interval).toBe(1000);
    expect(b.next(false)).toBe(2000);
    expect(b.next(false)).toBe(4000);
    expect(b.next(false)).toBe(5000);
    expect(b.next(false)).toBe(5000);
    expect(b.next(true)).toBe(1000);
    expect(b.fail()).toBe(4000);
    expect(b.fail()).toBe(5000);
    expect(b.reset()).toBe(1000);
  });

  it('says how long ago a key was verified', () => {
    const now = new Date('2026-03-05T12:00:00Z');
    expect(ago(null, now)).toBe('never');
    expect(ago('2026-03-05T11:59:30Z', now)).toBe('just now');
    expect(ago('2026-03-05T11:55:00+00:00', now)).toBe('5 min ago');
    expect(ago('2026-03-05T09:00:00', now)).toBe('3 h ago');
    expect(ago('2026-03-01T12:00:00Z', now)).toBe('4 d ago');
  });
});
