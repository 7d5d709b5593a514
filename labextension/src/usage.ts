/**
 * The Usage & Cost section: a time range, totals, cost charts by provider, model, feature and
 * notebook, the most recent calls, and a CSV export. One GET /byok/usage per refresh
 * (grouped by all four dimensions; the charts sum over the others on this side). With a
 * shared ledger (PostgreSQL, seen in GET /byok/status), a Scope choice: my rows, my team's,
 * or everyone's (the last two need the jupyter_byok:team permission).
 */
import { showErrorMessage } from '@jupyterlab/apputils';

import { api, IUsage, UsageScope } from './api';
import { drawBars, resizeChart } from './charts';
import { clear, h, options, uid } from './dom';
import { messageOf } from './errors';
import {
  barsBy,
  csvFileName,
  DIMENSIONS,
  Dimension,
  formatUSD,
  IRange,
  RangeKind,
  rangeToQuery,
  TABLE_COLUMNS,
  tableRow,
  toCSV,
  totals
} from './transforms';

const RECENT_LIMIT = 50;
const EXPORT_LIMIT = 100000;

const TITLES: Record<Dimension, string> = {
  provider: 'Cost by provider',
  model: 'Cost by model',
  feature: 'Cost by feature',
  notebook: 'Cost by notebook'
};

export class UsageSection {
  readonly node: HTMLElement;
  private range: IRange = { kind: 'today' };
  private select: HTMLSelectElement;
  private from: HTMLInputElement;
  private to: HTMLInputElement;
  private custom: HTMLElement;
  private totalsEl: HTMLElement;
  private charts = new Map<Dimension, HTMLElement>();
  private table: HTMLTableSectionElement;
  private status: HTMLElement;
  private last: IUsage | null = null;
  private busy: Promise<void> | null = null;
  private stale = false;
  private scope: HTMLSelectElement;
  private scopeBox: HTMLElement;

  constructor() {
    const selectId = uid('byok-range');
    this.select = h(
      'select',
      {
        id: selectId,
        'aria-label': 'Time range',
        onchange: () => {
          const kind = this.select.value as RangeKind;
          this.custom.hidden = kind !== 'custom';
          if (kind !== 'custom') {
            this.range = { kind };
            void this.refreshWithErrors();
          } else {
            this.from.focus();
          }
        }
      },
      options([
        ['today', 'Today'],
        ['7d', 'Last 7 days'],
        ['30d', 'Last 30 days'],
        ['custom', 'Custom…']
      ])
    );
    const today = new Date().toISOString().slice(0, 10);
    this.from = h('input', { type: 'date', 'aria-label': 'From date', max: today });
    this.to = h('input', { type: 'date', 'aria-label': 'To date (inclusive)', value: today });
    this.custom = h(
      'div',
      { class: 'jp-byok-custom', hidden: true },
      this.from,
      h('span', { text: '–', 'aria-hidden': 'true' }),
      this.to,
      h('button', {
        type: 'button',
        class: 'jp-mod-styled jp-byok-small',
        text: 'Apply',
        'aria-label': 'Apply the custom range',
        onclick: () => {
          this.range = { kind: 'custom', from: this.from.value, to: this.to.value };
          void this.refreshWithErrors();
        }
      })
    );
    const scopeId = uid('byok-scope');
    this.scope = h(
      'select',
      {
        id: scopeId,
        'aria-label': 'Whose usage',
        'data-testid': 'byok-scope',
        onchange: () => void this.refreshWithErrors()
      },
      options([
        ['me', 'Me'],
        ['team', 'My team'],
        ['all', 'Everyone']
      ])
    );
    this.scopeBox = h(
      'span',
      { class: 'jp-byok-scope', hidden: true },
      h('label', { for: scopeId, text: 'Scope' }),
      this.scope
    );
    void this.detectShared();
    this.totalsEl = h('div', { class: 'jp-byok-totals', 'data-testid': 'byok-totals', 'aria-live': 'polite' });
    this.status = h('p', { class: 'jp-byok-muted', role: 'status' });
    const chartBlocks = DIMENSIONS.map(dim => {
      const el = h('div', { class: 'jp-byok-chart', 'data-dimension': dim });
      this.charts.set(dim, el);
      return h('figure', { class: 'jp-byok-figure' }, h('figcaption', { text: TITLES[dim] }), el);
    });
    this.table = h('tbody');
    const table = h(
      'table',
      { class: 'jp-byok-table', 'aria-label': 'Recent calls', 'data-testid': 'byok-recent' },
      h('thead', {}, h('tr', {}, TABLE_COLUMNS.map(c => h('th', { scope: 'col', text: c.title })))),
      this.table
    );
    this.node = h(
      'section',
      { class: 'jp-byok-section', 'aria-label': 'Usage and cost' },
      h(
        'div',
        { class: 'jp-byok-toolbar' },
        h('label', { for: selectId, text: 'Range' }),
        this.select,
        this.scopeBox,
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-byok-small',
          text: 'Refresh',
          'aria-label': 'Refresh usage',
          onclick: () => void this.refreshWithErrors()
        }),
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-byok-small',
          text: 'Export CSV',
          'aria-label': 'Export the calls in this range as CSV',
          onclick: () => void this.exportCSV()
        })
      ),
      this.custom,
      this.totalsEl,
      this.status,
      chartBlocks,
      h('h4', { text: 'Recent calls' }),
      h('div', { class: 'jp-byok-table-wrap', tabindex: 0, role: 'region', 'aria-label': 'Recent calls table' }, table)
    );
  }

  /** Reload and redraw. Only one refresh runs at a time; a second call waits for it. */
  refresh(): Promise<void> {
    if (this.busy) {
      // the range or scope may have changed since the load in flight began: load again
      // once it ends, so that the last choice is what is shown
      this.stale = true;
      return this.busy;
    }
    this.busy = (async () => {
      try {
        do {
          this.stale = false;
          await this.load();
        } while (this.stale);
      } finally {
        this.busy = null;
      }
    })();
    return this.busy;
  }

  async refreshWithErrors(): Promise<void> {
    try {
      await this.refresh();
    } catch (error) {
      await showErrorMessage('Could not load usage', messageOf(error));
    }
  }

  /** Redraw the charts (after a theme change or a resize). */
  redraw(): void {
    if (this.last) {
      void this.drawCharts(this.last);
    }
  }

  resize(): void {
    for (const el of this.charts.values()) {
      void resizeChart(el);
    }
  }

  /** Show the Scope choice when the server's ledger is shared (PostgreSQL). */
  private async detectShared(): Promise<void> {
    try {
      const status = await api.status();
      this.scopeBox.hidden = status.ledger?.backend !== 'postgresql';
    } catch {
      this.scopeBox.hidden = true;
    }
  }

  /** The chosen scope, only when the ledger is shared (a local one holds only "me"). */
  private chosenScope(): UsageScope | undefined {
    return this.scopeBox.hidden ? undefined : (this.scope.value as UsageScope);
  }

  private async load(): Promise<void> {
    const { since, until } = rangeToQuery(this.range);
    this.status.textContent = 'Loading…';
    let usage: IUsage;
    try {
      usage = await api.usage({
        since,
        until,
        by: DIMENSIONS,
        limit: RECENT_LIMIT,
        scope: this.chosenScope()
      });
    } catch (error) {
      this.status.textContent = messageOf(error);
      this.status.classList.add('jp-byok-error');
      throw error;
    }
    this.status.classList.remove('jp-byok-error');
    this.status.textContent = '';
    this.last = usage;
    this.renderTotals(usage);
    this.renderTable(usage);
    await this.drawCharts(usage);
  }

  private renderTotals(usage: IUsage): void {
    const t = totals(usage.groups as Array<Record<string, unknown>>, usage.total_usd);
    clear(this.totalsEl);
    this.totalsEl.dataset.totalUsd = String(t.cost);
    this.totalsEl.dataset.calls = String(t.calls);
    const stat = (label: string, value: string, testid: string) =>
      h('div', { class: 'jp-byok-stat' }, h('span', { class: 'jp-byok-stat-value', 'data-testid': testid, text: value }), h('span', { class: 'jp-byok-stat-label', text: label }));
    this.totalsEl.appendChild(stat('spent', formatUSD(t.cost), 'byok-total-cost'));
    this.totalsEl.appendChild(stat('calls', String(t.calls), 'byok-total-calls'));
    if (t.unknownCalls) {
      this.totalsEl.appendChild(stat('unpriced calls', String(t.unknownCalls), 'byok-total-unknown'));
    }
  }

  private renderTable(usage: IUsage): void {
    clear(this.table);
    if (!usage.recent.length) {
      this.table.appendChild(
        h('tr', {}, h('td', { colspan: TABLE_COLUMNS.length, class: 'jp-byok-muted', text: 'No calls in this range.' }))
      );
      return;
    }
    for (const row of usage.recent) {
      const cells = tableRow(row as Record<string, unknown>);
      this.table.appendChild(
        h(
          'tr',
          { 'data-status': String(row.status ?? '') },
          TABLE_COLUMNS.map(c => h('td', { 'data-col': c.key, text: cells[c.key], title: c.key === 'notebook' ? String(row.notebook ?? '') : undefined }))
        )
      );
    }
  }

  private async drawCharts(usage: IUsage): Promise<void> {
    const groups = usage.groups as Array<Record<string, unknown>>;
    await Promise.all(
      DIMENSIONS.map(dim => drawBars(this.charts.get(dim)!, TITLES[dim], barsBy(groups, dim)))
    );
  }

  private async exportCSV(): Promise<void> {
    try {
      const { since, until } = rangeToQuery(this.range);
      const usage = await api.usage({
        since,
        until,
        by: ['provider'],
        limit: EXPORT_LIMIT,
        scope: this.chosenScope()
      });
      const csv = toCSV(usage.recent as Array<Record<string, unknown>>);
      const url = URL.createObjectURL(new Blob([csv], { type: 'text/csv;charset=utf-8' }));
      const link = h('a', { href: url, download: csvFileName(this.range), hidden: true });
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      await showErrorMessage('Could not export usage', messageOf(error));
    }
  }
}
