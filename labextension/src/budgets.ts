/**
 * The Budgets section: every spend limit with its current spend, editable in place.
 * Saving replaces the whole list (PUT /byok/budgets), as the REST API defines it.
 */
import { showErrorMessage } from '@jupyterlab/apputils';

import { api, IBudget, IBudgetStatus } from './api';
import { clear, h, options } from './dom';
import { messageOf } from './errors';
import { budgetLabel, budgetProgress, formatUSD, toNumber } from './transforms';

/** Fields the server computes: not sent back on save. */
const COMPUTED = new Set([
  'name',
  'spent_usd',
  'state',
  'message',
  'fraction',
  'remaining_usd',
  'used',
  'percent',
  'window_start',
  'window_end',
  'since',
  'until'
]);

/** A budget as shown: from the server (with its spend), or a new one being added. */
type Shown = IBudget & Partial<IBudgetStatus>;

interface IRow {
  budget: Shown;
  period: HTMLSelectElement;
  scope: HTMLSelectElement;
  target: HTMLInputElement;
  limit: HTMLInputElement;
  warn: HTMLInputElement;
}

export class BudgetsSection {
  readonly node: HTMLElement;
  private body: HTMLElement;
  private rows: IRow[] = [];
  private saveButton: HTMLButtonElement;

  constructor(private readonly onChange: () => void) {
    this.body = h('div', { class: 'jp-byok-budgets', 'aria-live': 'polite' });
    this.saveButton = h('button', {
      type: 'button',
      class: 'jp-mod-styled jp-mod-accept jp-byok-primary',
      text: 'Save budgets',
      'aria-label': 'Save budgets',
      onclick: () => void this.save()
    });
    this.node = h(
      'section',
      { class: 'jp-byok-section', 'aria-label': 'Budgets' },
      h('p', {
        class: 'jp-byok-hint',
        text:
          'A call that would go over a limit is blocked before it is sent; a warning shows ' +
          'from the warning threshold on.'
      }),
      this.body,
      h(
        'div',
        { class: 'jp-byok-form-actions' },
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-byok-small',
          text: 'Add budget',
          'aria-label': 'Add a budget',
          onclick: () => this.addRow()
        }),
        this.saveButton
      )
    );
  }

  async refresh(): Promise<void> {
    let budgets: IBudgetStatus[];
    try {
      budgets = (await api.budgets()).budgets;
    } catch (error) {
      clear(this.body);
      this.body.appendChild(h('p', { class: 'jp-byok-error', text: messageOf(error) }));
      throw error;
    }
    this.render(budgets);
  }

  private render(budgets: IBudgetStatus[]): void {
    clear(this.body);
    this.rows = [];
    if (!budgets.length) {
      this.body.appendChild(
        h('p', { class: 'jp-byok-muted jp-byok-empty', text: 'No budgets yet: calls are not limited.' })
      );
    }
    for (const budget of budgets) {
      this.body.appendChild(this.renderRow(budget));
    }
  }

  private addRow(): void {
    this.body.querySelector('.jp-byok-empty')?.remove();
    const row = this.renderRow({ period: 'day', scope: 'total', target: null, limit_usd: '', warn_at: 0.8 });
    this.body.appendChild(row);
    row.querySelector('input')?.focus();
  }

  private renderRow(budget: Shown): HTMLElement {
    const name = budgetLabel(budget);
    const target = budget.target ?? budget.model ?? budget.provider ?? '';
    const scopeValue = String(budget.scope ?? (budget.model ? 'model' : budget.provider ? 'provider' : 'total')).replace(/^global$/, 'total');
    const periodValue = String(budget.period ?? 'day').replace(/^daily$/, 'day').replace(/^monthly$/, 'month');
    const row: IRow = {
      budget,
      period: h('select', { 'aria-label': `Period of budget ${name}` }, options([['day', 'per day (UTC)'], ['month', 'per month (UTC)'], ['call', 'per call']], periodValue)),
      scope: h('select', { 'aria-label': `Scope of budget ${name}` }, options([['total', 'all calls'], ['provider', 'provider'], ['model', 'model'], ['feature', 'feature']], scopeValue)),
      target: h('input', { type: 'text', value: String(target ?? ''), placeholder: 'openai, openai:gpt-4o-mini or magic', 'aria-label': `Provider or model of budget ${name}` }),
      limit: h('input', { type: 'number', min: '0', step: '0.01', value: String(budget.limit_usd ?? ''), 'aria-label': `Limit in USD of budget ${name}`, class: 'jp-byok-num' }),
      warn: h('input', { type: 'number', min: '1', max: '100', step: '1', value: String(Math.round((toNumber(budget.warn_at) ?? 0.8) * 100)), 'aria-label': `Warning threshold in percent of budget ${name}`, class: 'jp-byok-num' })
    };
    const syncTarget = () => {
      row.target.disabled = row.scope.value === 'total';
    };
    row.scope.addEventListener('change', syncTarget);
    syncTarget();
    this.rows.push(row);
    const { fraction, state } = budgetProgress(budget);
    const spent = budget.spent_usd !== undefined && budget.spent_usd !== null;
    const el = h(
      'div',
      { class: `jp-byok-budget jp-byok-state-${state}`, 'data-state': state, 'data-testid': 'byok-budget' },
      h(
        'div',
        { class: 'jp-byok-budget-line' },
        row.period,
        row.scope,
        row.target
      ),
      h(
        'div',
        { class: 'jp-byok-budget-line' },
        h('span', { text: 'limit $' }),
        row.limit,
        h('span', { text: 'warn at' }),
        row.warn,
        h('span', { text: '%' }),
        h('button', {
          type: 'button',
          class: 'jp-mod-styled jp-byok-small',
          text: 'Remove',
          'aria-label': `Remove budget ${name}`,
          onclick: () => {
            this.rows = this.rows.filter(r => r !== row);
            el.remove();
          }
        })
      ),
      spent
        ? h(
            'div',
            { class: 'jp-byok-budget-line' },
            h('progress', {
              max: '1',
              value: String(Math.min(1, fraction)),
              'aria-label': `Spent ${formatUSD(budget.spent_usd)} of ${formatUSD(budget.limit_usd)}`
            }),
            h('span', {
              class: 'jp-byok-budget-spent',
              text: `${formatUSD(budget.spent_usd)} of ${formatUSD(budget.limit_usd)} (${Math.round(fraction * 100)}%)${state === 'exceeded' ? ' · over the limit' : state === 'warning' ? ' · near the limit' : ''}`
            })
          )
        : null
    );
    return el;
  }

  /** The edited list, without the fields the server computes. */
  collect(): IBudget[] {
    return this.rows.map(row => {
      const out: IBudget = { period: 'day', scope: 'total', target: null, limit_usd: null, warn_at: '0.8' };
      for (const [key, value] of Object.entries(row.budget)) {
        if (!COMPUTED.has(key)) {
          out[key] = value;
        }
      }
      const limit = row.limit.value.trim();
      if (!limit || !(Number(limit) >= 0)) {
        throw new Error('Every budget needs a limit in USD (0 or more).');
      }
      const scope = row.scope.value;
      const target = row.target.value.trim();
      if (scope !== 'total' && !target) {
        throw new Error(`A ${scope} budget needs a ${scope} name.`);
      }
      const warn = Number(row.warn.value);
      out.period = row.period.value;
      out.scope = scope;
      out.target = scope === 'total' ? null : target;
      delete out.provider;
      delete out.model;
      out.limit_usd = limit;
      out.warn_at = String(Number.isFinite(warn) && warn > 0 ? warn / 100 : 0.8);
      return out;
    });
  }

  private async save(): Promise<void> {
    this.saveButton.disabled = true;
    try {
      const { budgets } = await api.setBudgets(this.collect());
      this.render(budgets);
      this.onChange();
    } catch (error) {
      await showErrorMessage('Could not save the budgets', messageOf(error));
    } finally {
      this.saveButton.disabled = false;
    }
  }
}
