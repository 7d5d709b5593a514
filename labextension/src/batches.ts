/**
 * The "Batches" section: provider batches submitted by `map(..., mode="batch")`, from any
 * kernel, as recorded in the ledger database. Each shows its pipeline and node, provider,
 * state and counts; one in flight can be asked about now (Status) or cancelled (Cancel).
 * Served by /byok/batches; the server makes the provider calls with its keys.
 */
import { showErrorMessage } from '@jupyterlab/apputils';

import { api, IBatch } from './api';
import { countsText, createdText, inFlight } from './batchformat';
import { clear, h } from './dom';
import { messageOf } from './errors';

export { countsText, createdText, inFlight };

export class BatchesSection {
  readonly node: HTMLElement;
  private list: HTMLElement;

  constructor(private readonly onChange: () => void) {
    this.list = h('div', { class: 'jp-byok-batches-list', 'aria-live': 'polite' });
    this.node = h(
      'section',
      { class: 'jp-byok-section jp-byok-batches', 'aria-label': 'Batches' },
      h('p', {
        class: 'jp-byok-hint',
        text:
          'Provider batches from map(..., mode="batch"): half price, answered within a day. ' +
          'Running the same map again attaches to them; `jupyter byok batches` manages them ' +
          'from a terminal.'
      }),
      this.list
    );
  }

  async refresh(): Promise<void> {
    let batches: IBatch[];
    try {
      batches = (await api.batches()).batches;
    } catch (error) {
      clear(this.list);
      this.list.appendChild(h('p', { class: 'jp-byok-error', text: messageOf(error) }));
      throw error;
    }
    this.render(batches);
  }

  render(batches: IBatch[]): void {
    clear(this.list);
    if (!batches.length) {
      this.list.appendChild(h('p', { class: 'jp-byok-muted', text: 'No batches yet.' }));
      return;
    }
    const head = h(
      'tr',
      {},
      ['Pipeline / node', 'Provider', 'State', 'Items', 'Submitted (UTC)', ''].map(text =>
        h('th', { scope: 'col', text })
      )
    );
    const rows = batches.map(batch => this.renderRow(batch));
    this.list.appendChild(
      h(
        'div',
        { class: 'jp-byok-table-wrap' },
        h('table', { class: 'jp-byok-table jp-byok-batches-table' }, h('thead', {}, head), h('tbody', {}, rows))
      )
    );
  }

  private renderRow(batch: IBatch): HTMLElement {
    const label = `${batch.pipeline ?? '–'} / ${batch.node ?? '–'}`;
    const actions = inFlight(batch)
      ? [
          h('button', {
            type: 'button',
            class: 'jp-mod-styled jp-byok-small',
            text: 'Status',
            'aria-label': `Ask ${batch.provider} about batch ${label} now`,
            onclick: () => void this.act(() => api.refreshBatch(batch.id))
          }),
          h('button', {
            type: 'button',
            class: 'jp-mod-styled jp-byok-small',
            text: 'Cancel',
            'aria-label': `Cancel batch ${label}`,
            onclick: () => void this.act(() => api.cancelBatch(batch.id))
          })
        ]
      : [];
    return h(
      'tr',
      { 'data-batch': batch.id },
      h('td', {}, h('strong', { text: label }), h('div', { class: 'jp-byok-muted', text: batch.model })),
      h('td', { text: batch.provider, title: batch.provider_batch_id ?? '' }),
      h('td', { text: batch.state }),
      h('td', { text: countsText(batch) }),
      h('td', { text: createdText(batch) }),
      h('td', { class: 'jp-byok-batches-actions' }, actions)
    );
  }

  private async act(call: () => Promise<IBatch>): Promise<void> {
    try {
      await call();
      this.onChange();
      await this.refresh();
    } catch (error) {
      void showErrorMessage('Batch', messageOf(error));
    }
  }
}
