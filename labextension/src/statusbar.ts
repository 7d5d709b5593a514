/**
 * Today's spend and budget state: a model that polls GET /byok/status with backoff, and the
 * status-bar widget that shows it. Polling pauses while the page is hidden, restarts at the
 * base interval when something changed or a call was just made, and slows down otherwise.
 */
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { api, IStatus } from './api';
import { h } from './dom';
import { ByokApiError, messageOf } from './errors';
import { Backoff, budgetLabel, budgetProgress, BudgetState, formatUSD, worstBudget } from './transforms';

export class SpendModel {
  private backoff: Backoff;
  private timer: number | null = null;
  private inflight: Promise<void> | null = null;
  private key = '';
  private disposed = false;
  private _changed = new Signal<this, void>(this);
  status: IStatus | null = null;
  error: string | null = null;

  constructor(intervalSeconds: number) {
    this.backoff = new Backoff(intervalSeconds * 1000, Math.max(intervalSeconds * 1000 * 10, 300000));
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  /** Emitted when today's spend, the budget state or the error changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Tell listeners to re-read the model (e.g. after a settings change). */
  notify(): void {
    this._changed.emit();
  }

  setInterval(seconds: number): void {
    this.backoff = new Backoff(seconds * 1000, Math.max(seconds * 1000 * 10, 300000));
    this.schedule(this.backoff.interval);
  }

  start(): void {
    void this.refresh();
  }

  /** Fetch now (a call just finished, or the user changed something) and reset the backoff. */
  refresh(): Promise<void> {
    if (this.inflight) {
      return this.inflight;
    }
    this.inflight = this.poll(true).finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  dispose(): void {
    this.disposed = true;
    this.clearTimer();
    document.removeEventListener('visibilitychange', this.onVisibility);
  }

  private async poll(forced: boolean): Promise<void> {
    this.clearTimer();
    let delay: number;
    try {
      const status = await api.status();
      const key = JSON.stringify([status.spend_today_usd, status.budgets]);
      const changed = key !== this.key || this.error !== null;
      this.status = status;
      this.error = null;
      this.key = key;
      delay = forced ? this.backoff.reset() : this.backoff.next(changed);
      if (changed) {
        this._changed.emit();
      }
    } catch (error) {
      const message = messageOf(error);
      const changed = message !== this.error;
      this.error = message;
      // A missing server extension will not appear by itself: wait the longest.
      delay =
        error instanceof ByokApiError && error.serverMissing ? this.backoff.max : this.backoff.fail();
      if (changed) {
        this._changed.emit();
      }
    }
    this.schedule(delay);
  }

  private schedule(delay: number): void {
    this.clearTimer();
    if (this.disposed || document.hidden) {
      return;
    }
    this.timer = window.setTimeout(() => {
      this.timer = null;
      if (!this.inflight) {
        this.inflight = this.poll(false).finally(() => {
          this.inflight = null;
        });
      }
    }, delay);
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private onVisibility = (): void => {
    if (document.hidden) {
      this.clearTimer();
    } else {
      void this.refresh();
    }
  };
}

const STATE_TEXT: Record<BudgetState, string> = {
  none: 'no budget',
  ok: 'within budget',
  warning: 'near a budget limit',
  exceeded: 'over a budget limit'
};

export class SpendStatus extends Widget {
  private button: HTMLElement;
  private amount: HTMLElement;
  private dot: HTMLElement;

  constructor(
    private readonly model: SpendModel,
    private readonly open: () => void
  ) {
    super();
    this.addClass('jp-byok-status');
    this.amount = h('span', { class: 'jp-byok-status-amount', text: 'BYOK …' });
    this.dot = h('span', { class: 'jp-byok-status-dot', 'aria-hidden': 'true' });
    this.button = h(
      'div',
      {
        role: 'button',
        tabindex: 0,
        class: 'jp-byok-status-button',
        'data-testid': 'byok-status',
        'aria-label': 'BYOK spend today: loading. Open the usage dashboard.',
        onclick: () => this.open(),
        onkeydown: (event: KeyboardEvent) => {
          if (event.key === 'Enter' || event.key === ' ') {
            event.preventDefault();
            this.open();
          }
        }
      },
      this.dot,
      this.amount
    );
    this.node.appendChild(this.button);
    model.changed.connect(this.update, this);
    this.update();
  }

  dispose(): void {
    this.model.changed.disconnect(this.update, this);
    super.dispose();
  }

  update(): void {
    const { status, error } = this.model;
    const b = this.button;
    if (error) {
      b.dataset.state = 'error';
      this.amount.textContent = 'BYOK: unavailable';
      b.title = error;
      b.setAttribute('aria-label', `BYOK unavailable: ${error}`);
      return;
    }
    if (!status) {
      return;
    }
    const spend = formatUSD(status.spend_today_usd);
    const worst = worstBudget(status.budgets);
    b.dataset.state = worst.state;
    b.dataset.spend = String(status.spend_today_usd ?? '');
    this.amount.textContent = `BYOK ${spend} today`;
    const lines = [`Spent today: ${spend}`, `Budget: ${STATE_TEXT[worst.state]}`];
    for (const budget of status.budgets || []) {
      const { fraction } = budgetProgress(budget);
      lines.push(
        `${budgetLabel(budget)}: ${formatUSD(budget.spent_usd)} of ${formatUSD(budget.limit_usd)} (${Math.round(fraction * 100)}%)`
      );
    }
    if (status.ledger_error) {
      lines.push(`Ledger: ${status.ledger_error}`);
    }
    lines.push('Click to open the usage dashboard.');
    b.title = lines.join('\n');
    b.setAttribute(
      'aria-label',
      `BYOK spend today ${spend}, ${STATE_TEXT[worst.state]}. Open the usage dashboard.`
    );
  }
}
